# Cairn's image for users with Docker and a registry: `docker build -t cairn .` compiles static
# binaries in a Rust image and copies them into an empty one. It holds what scripts/build-image.sh
# builds offline (the way this project's machines and CI build it, with no base image): cairn-node
# (the entrypoint), cairn-coordinator, cairn-gateway and cairnctl, user 65532, data in /data.
# D73 in docs/decisions.md.

FROM rust:1.95-bookworm AS build
# libclang: bindgen for RocksDB's C API; protoc: a dependency's build script; g++: RocksDB's C++.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libclang-dev protobuf-compiler libprotobuf-dev g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# A static link takes libstdc++ only as an archive: give it a folder of its own on the path.
RUN mkdir /static-libs \
    && ln -s "$(g++ -print-file-name=libstdc++.a)" /static-libs/libstdc++.a \
    && RUSTFLAGS="-C target-feature=+crt-static -L native=/static-libs" \
        cargo build --release --locked --target x86_64-unknown-linux-gnu \
        -p cairn-storage-node -p cairn-coordinator -p cairn-gateway -p cairn-cli --bins
RUN mkdir -p /rootfs/usr/local/bin /rootfs/etc /rootfs/data /rootfs/tmp \
    && for binary in cairn-node cairn-coordinator cairn-gateway cairnctl; do \
        cp "target/x86_64-unknown-linux-gnu/release/$binary" /rootfs/usr/local/bin/; done \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\ncairn:x:65532:65532:cairn:/data:/sbin/nologin\n' >/rootfs/etc/passwd \
    && printf 'root:x:0:\ncairn:x:65532:\n' >/rootfs/etc/group \
    && printf 'passwd: files\ngroup: files\nhosts: files dns\n' >/rootfs/etc/nsswitch.conf \
    && chown 65532:65532 /rootfs/data && chmod 0750 /rootfs/data && chmod 1777 /rootfs/tmp

FROM scratch
COPY --from=build /rootfs /
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /data
VOLUME /data
EXPOSE 7000 7001 7101 9000
LABEL org.opencontainers.image.title="cairn" \
      org.opencontainers.image.description="Cairn: a sharded, strongly consistent key-value store (cairn-node, cairn-coordinator, cairn-gateway, cairnctl)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/cairn-node"]
