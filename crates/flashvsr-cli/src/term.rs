//! What stderr can show: an updating line needs a terminal that is not `TERM=dumb`; colour also
//! needs `NO_COLOR` unset or empty (https://no-color.org).

use std::io::IsTerminal;

fn dumb_terminal() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// Whether stderr is a terminal that understands carriage return and erase-line.
pub fn can_redraw() -> bool {
    std::io::stderr().is_terminal() && !dumb_terminal()
}

/// Whether messages on stderr may be coloured.
pub fn colour() -> bool {
    can_redraw() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in SGR `code` (e.g. "1;31" bold red) when colour is allowed, else as is.
pub fn paint(text: &str, code: &str) -> String {
    if colour() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}
