//! The configuration reference (`docs/configuration.md`) is true: every setting that
//! `cairn-node`, `cairn-coordinator` and `cairn-gateway` accept is documented, and every
//! documented setting exists. The settings come from each binary's configuration struct
//! (`accepted_settings`), so a field added without documentation fails here. (`cairnctl`'s
//! settings are checked in `crates/cli`.)

use cairn_test_harness::config_reference::{
    accepted_settings, mismatches, setting_of_variable, Accepted, Reference,
};

#[test]
fn every_setting_is_documented_and_every_documented_setting_exists() {
    let reference = Reference::of_this_repository();
    let binaries: [(&str, Accepted); 3] = [
        (
            "cairn-node",
            accepted_settings(&cairn_storage_node::NodeConfig::default()),
        ),
        (
            "cairn-coordinator",
            accepted_settings(&cairn_coordinator::CoordinatorConfig::default()),
        ),
        (
            "cairn-gateway",
            accepted_settings(&cairn_gateway::GatewayConfig::default()),
        ),
    ];
    let mut problems = Vec::new();
    for (binary, accepted) in &binaries {
        let own = reference
            .binaries
            .get(*binary)
            .unwrap_or_else(|| panic!("docs/configuration.md has no part for {binary}"));
        problems.extend(mismatches(binary, accepted, own, &reference.shared));
    }
    for (variable, setting) in &reference.variables {
        if setting_of_variable(variable).as_deref() != Some(setting.as_str()) {
            problems.push(format!("`{variable}` does not set `{setting}`"));
        }
    }
    for name in &reference.shared {
        if !binaries.iter().any(|(_, accepted)| accepted.contains(name)) {
            problems.push(format!(
                "`{name}` is documented in the shared tables but no binary has it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of step with the configuration structs:\n{}",
        problems.join("\n")
    );
}
