//! `stowage-runner`: the child process that runs one process-isolated
//! plugin (SPEC §14). Started by the host with its socket on descriptor 3;
//! not meant to be run by hand. Everything lives in
//! `stowage::isolation::runner`.

fn main() -> std::process::ExitCode {
    stowage::isolation::runner::main()
}
