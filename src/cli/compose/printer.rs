//! Container output as docker compose prints it (`logs`, attached `up`): each line prefixed
//! by the container's name without the project (`web-1  | `), the names padded to the widest
//! plus one, each container in its own colour on a terminal (docker compose's rainbow), lines
//! a container wrote to stderr on stderr, and status lines (`web-1 exited with code 0`).

use std::collections::HashMap;
use std::io::Write as _;

use crate::engine::container::logs::LogRecord;

/// docker compose's colours, in the order it hands them out.
const RAINBOW: [&str; 10] = [
    "36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1",
];

/// Prints container output.
#[derive(Debug)]
pub struct Printer {
    colour: bool,
    prefix: bool,
    timestamps: bool,
    width: usize,
    colours: HashMap<String, &'static str>,
    next: usize,
    /// Partial lines (no newline yet), by container.
    pending: HashMap<String, String>,
}

impl Printer {
    /// A printer: `colour` for ANSI colours, `prefix` for the `name | ` prefix,
    /// `timestamps` to show each line's time.
    #[must_use]
    pub fn new(colour: bool, prefix: bool, timestamps: bool) -> Printer {
        Printer {
            colour,
            prefix,
            timestamps,
            width: 0,
            colours: HashMap::new(),
            next: 0,
            pending: HashMap::new(),
        }
    }

    /// Registers a container name: it gets the next colour, and the prefix width grows to
    /// fit it. Registering twice changes nothing.
    pub fn register(&mut self, name: &str) {
        if self.colours.contains_key(name) {
            return;
        }
        self.colours
            .insert(name.to_owned(), RAINBOW[self.next % RAINBOW.len()]);
        self.next += 1;
        self.width = self.width.max(name.chars().count() + 1);
    }

    fn paint(&self, name: &str, text: &str) -> String {
        match self.colours.get(name) {
            Some(c) if self.colour => format!("\x1b[{c}m{text}\x1b[0m"),
            _ => text.to_owned(),
        }
    }

    fn prefix_of(&self, name: &str) -> String {
        if !self.prefix {
            return String::new();
        }
        let w = self.width;
        self.paint(name, &format!("{name:<w$} | "))
    }

    /// Prints one log record of container `name`: on stdout or stderr as the container wrote
    /// it; `time` replaces the record's time (attached `up` shows when it printed the line).
    pub fn log(&mut self, name: &str, rec: &LogRecord, time: Option<&str>) {
        self.register(name);
        let mut text = self.pending.remove(name).unwrap_or_default();
        text.push_str(rec.text.trim_end_matches('\n'));
        if rec.partial {
            self.pending.insert(name.to_owned(), text);
            return;
        }
        let ts = if self.timestamps {
            format!("{} ", fixed_nanos(time.unwrap_or(&rec.time)))
        } else {
            String::new()
        };
        let line = format!("{}{ts}{text}\n", self.prefix_of(name));
        let _ = if rec.stream == "stderr" {
            std::io::stderr().lock().write_all(line.as_bytes())
        } else {
            std::io::stdout().lock().write_all(line.as_bytes())
        };
    }

    /// Prints a status line of container `name` on stdout (`web-1 exited with code 0`),
    /// starting with a carriage return and an erase-line, as docker compose does.
    pub fn status(&mut self, name: &str, message: &str) {
        self.register(name);
        let line = self.paint(name, &format!("\r\x1b[K{name} {message}\n"));
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// An RFC 3339 time with nine fractional digits (docker's `RFC3339NanoFixed`).
#[must_use]
pub fn fixed_nanos(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let secs = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            format!("{secs}.{:09}Z", t.subsec_nanosecond())
        }
        Err(_) => time.to_owned(),
    }
}

/// Now, as [`fixed_nanos`] prints it.
#[must_use]
pub fn now_fixed() -> String {
    fixed_nanos(&jiff::Timestamp::now().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pad_to_the_widest_plus_one_and_colours_follow_compose() {
        let mut p = Printer::new(true, true, false);
        p.register("web-1");
        p.register("longer-name-1");
        p.register("web-1");
        assert_eq!(p.width, 14);
        assert_eq!(p.prefix_of("web-1"), "\x1b[36mweb-1          | \x1b[0m");
        assert_eq!(
            p.prefix_of("longer-name-1"),
            "\x1b[33mlonger-name-1  | \x1b[0m"
        );
        let plain = Printer { colour: false, ..p };
        assert_eq!(plain.prefix_of("web-1"), "web-1          | ");
        assert_eq!(
            fixed_nanos("2026-12-05T07:30:33.6655Z"),
            "2026-12-05T07:30:33.665500000Z"
        );
    }
}
