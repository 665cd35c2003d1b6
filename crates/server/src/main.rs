use std::process::ExitCode;

fn main() -> ExitCode {
    agentledger::cli::main()
}
