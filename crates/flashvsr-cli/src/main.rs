//! The `flashvsr` command.

mod args;
mod assembler;
mod batch;
mod behind;
mod bench;
mod decoder_stream;
mod device;
mod failure;
mod frames_out;
mod heap;
mod host_pool;
mod interrupt;
mod job_run;
mod lq_levels;
mod memory_budget;
mod model_files;
mod models;
mod parallel;
mod parallel_output;
mod pipelined;
mod prepare_ahead;
mod progress;
mod stage_clock;
mod status;
mod term;
mod upscale;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use args::{Cli, Command, ModelsCommand};

fn main() -> ExitCode {
    heap::keep_frame_buffers();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Upscale(a) = &mut cli.command {
        a.resolve();
        a.segment_frames_given = matches
            .subcommand_matches("upscale")
            .and_then(|m| m.value_source("segment_frames"))
            == Some(clap::parser::ValueSource::CommandLine);
    }
    if wants_gpu(&cli.command) {
        // Point the dynamic loader at one consistent set of CUDA libraries (re-execs at most once).
        if let Err(e) = flashvsr_cuda::prepare_and_reexec_if_needed() {
            eprintln!("flashvsr: CUDA libraries: {e}");
        }
    }
    let result = match &cli.command {
        Command::Upscale(a) if a.worker_job.is_some() => return parallel::worker_main(a),
        Command::Upscale(a) => return upscale::main(a),
        Command::Status { output } => status::run(output),
        Command::Bench(a) => bench::run(a),
        Command::Models {
            command: ModelsCommand::Verify { dir, model_ver },
        } => verify::run(dir, *model_ver),
        Command::Models {
            command:
                ModelsCommand::Fetch {
                    model_ver,
                    full,
                    quiet,
                },
        } => models::run_fetch(*model_ver, *full, *quiet),
        Command::Models {
            command: ModelsCommand::Path { files },
        } => models::run_path(files),
        Command::Models {
            command: ModelsCommand::List,
        } => models::run_list(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}{e}", term::paint("flashvsr: error: ", "1;31"));
            e.exit_code()
        }
    }
}

fn wants_gpu(command: &Command) -> bool {
    let device = match command {
        Command::Upscale(a) => &a.device,
        Command::Bench(a) => &a.device,
        _ => return false,
    };
    !device.trim().eq_ignore_ascii_case("cpu")
}
