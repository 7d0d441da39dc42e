//! Digit-aware file name order ("frame2.png" < "frame10.png"), as the official scripts sort.

use std::cmp::Ordering;

enum Chunk<'a> {
    Digits(&'a str),
    Text(&'a str),
}

fn chunks(s: &str) -> impl Iterator<Item = Chunk<'_>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .char_indices()
            .find(|&(_, c)| c.is_ascii_digit() != digit)
            .map_or(rest.len(), |(i, _)| i);
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(if digit {
            Chunk::Digits(head)
        } else {
            Chunk::Text(head)
        })
    })
}

fn cmp_digits(a: &str, b: &str) -> Ordering {
    let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    // Compared as numbers of any length; "007" and "7" then order by their zero padding.
    ta.len()
        .cmp(&tb.len())
        .then_with(|| ta.cmp(tb))
        .then_with(|| a.len().cmp(&b.len()))
}

/// Numbers compare by value, text case-insensitively; exact ties fall back to the plain order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let mut ca = chunks(a);
    let mut cb = chunks(b);
    loop {
        let ord = match (ca.next(), cb.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(Chunk::Digits(x)), Some(Chunk::Digits(y))) => cmp_digits(x, y),
            (Some(Chunk::Digits(_)), Some(Chunk::Text(_))) => Ordering::Less,
            (Some(Chunk::Text(_)), Some(Chunk::Digits(_))) => Ordering::Greater,
            (Some(Chunk::Text(x)), Some(Chunk::Text(y))) => x
                .chars()
                .flat_map(char::to_lowercase)
                .cmp(y.chars().flat_map(char::to_lowercase)),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;

    #[test]
    fn orders_numbers_by_value() {
        let mut v = vec![
            "frame10.png",
            "frame2.png",
            "Frame1.png",
            "frame002.png",
            "a.png",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "a.png",
                "Frame1.png",
                "frame2.png",
                "frame002.png",
                "frame10.png"
            ]
        );
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let a = "x99999999999999999999999999.png";
        let b = "x100000000000000000000000000.png";
        assert!(natural_cmp(a, b).is_lt());
    }
}
