//! Generates the CSI gRPC server and client from `proto/csi.proto`.
//!
//! The proto is parsed by `protox`, a pure-Rust compiler, so no system `protoc` is needed. The
//! same descriptor set is written to `OUT_DIR/csi_descriptor.bin` and served by gRPC
//! reflection, so `grpcurl` can talk to the driver's socket without a local copy of the proto.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(["csi.proto"], ["proto"])?;
    let descriptor_path = out_dir.join("csi_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
