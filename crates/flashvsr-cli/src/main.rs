//! The `flashvsr` command.

mod args;
mod device;
mod failure;
mod frames_out;
mod model_files;
mod upscale;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ModelsCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Upscale(a) => upscale::run(a),
        Command::Models {
            command: ModelsCommand::Verify { dir, model_ver },
        } => verify::run(dir, *model_ver),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flashvsr: error: {e}");
            e.exit_code()
        }
    }
}
