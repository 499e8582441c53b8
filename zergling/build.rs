//! Links the zergling against the same libpython that pyo3 found (PYO3_PYTHON, or python3 on
//! PATH) and records that library's directory as an rpath, so the binary finds libpython at run
//! time without LD_LIBRARY_PATH.

fn main() {
    // pyo3's cfgs (`Py_GIL_DISABLED`, ...) for the code that depends on the interpreter's kind.
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
