//! Embeds the dashboard's wasm package when `scripts/build-wasm.sh` has built
//! it (`wasm/pkg/web`); without it, `oxiflow serve` still runs and the
//! dashboard says how to get it. Keeps `cargo build` free of a wasm toolchain.

fn main() {
    let pkg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm/pkg/web");
    println!("cargo::rerun-if-changed={}", pkg.display());
    println!("cargo::rustc-check-cfg=cfg(dashboard_wasm)");
    if pkg.join("oxiflow_wasm.js").is_file() && pkg.join("oxiflow_wasm_bg.wasm").is_file() {
        println!("cargo::rustc-cfg=dashboard_wasm");
    }
}
