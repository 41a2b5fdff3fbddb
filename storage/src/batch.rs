//! Batched statements: how many rows go in each multi-row statement, and their placeholders.

/// Rows per multi-row `INSERT` (the remainder goes in power-of-two chunks, so only a handful of
/// distinct statements are ever prepared). Kept small: SQLite looks bind parameters up by name
/// in a linear list, so the cost of binding grows with the square of the parameter count.
pub(crate) const CHUNK: usize = 64;

/// `n` as [`CHUNK`]-sized pieces then powers of two, so few distinct statements exist.
pub(crate) fn chunks(n: usize) -> Vec<usize> {
    let mut out = vec![CHUNK; n / CHUNK];
    let mut rest = n % CHUNK;
    let mut size = CHUNK / 2;
    while rest > 0 {
        if rest >= size {
            out.push(size);
            rest -= size;
        }
        size /= 2;
    }
    out
}

/// `($f,$f+1,…),(…)`: `rows` rows of `cols` placeholders, numbered from `first`.
pub(crate) fn values(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&(first + r * cols + c).to_string());
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_cover_every_row_with_few_sizes() {
        for n in [0, 1, 7, 63, 64, 65, 255, 256, 257, 1000, 5000] {
            let c = super::chunks(n);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c.iter().all(|s| s.is_power_of_two()));
        }
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(super::values(2, 2, 1), "($1,$2),($3,$4)");
        assert_eq!(super::values(3, 1, 3), "($3),($4),($5)");
    }
}
