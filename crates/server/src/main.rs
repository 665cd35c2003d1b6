use std::process::ExitCode;

/// mimalloc, not glibc's malloc: the ingest path allocates on the request
/// tasks and frees on the store's writer thread (a request's parsed
/// payloads, judged there), which glibc serialises on its arenas' locks
/// (measured: `malloc_consolidate` and arena futexes in the writer's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agentledger::cli::main()
}
