//! Generates the gRPC code for Dapr's Sentry API and the SPIFFE Workload API from `proto/`
//! with protox (a Rust protobuf
//! compiler: no system `protoc` needed; it knows the well-known types).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/dapr/proto/sentry/v1/sentry.proto",
        "proto/spiffe/workload.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
