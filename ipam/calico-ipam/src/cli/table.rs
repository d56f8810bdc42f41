//! Tables as the operator commands print them: go-pretty's default style, which calicoctl
//! uses, so that what an operator reads (and greps) is the same with either tool.
//!
//! ```text
//! +----------+--------------+
//! | GROUPING | CIDR         |
//! +----------+--------------+
//! | IP Pool  | 10.88.0.0/24 |
//! +----------+--------------+
//! ```

/// A table with a header row; columns marked right-aligned align their cells (not their
/// header) to the right, as go-pretty's `Align: text.AlignRight`.
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns the cells of `column` to the right.
    pub fn align_right(mut self, column: usize) -> Table {
        self.right[column] = true;
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| width(&r[c]))
                    .chain([width(&self.header[c])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+\n";
        let line = |cells: &[String], right: &[bool]| -> String {
            let mut out = String::new();
            for ((cell, w), r) in cells.iter().zip(&widths).zip(right) {
                let pad = " ".repeat(w - width(cell));
                if *r {
                    out += &format!("| {pad}{cell} ");
                } else {
                    out += &format!("| {cell}{pad} ");
                }
            }
            out + "|\n"
        };
        let mut out = rule.clone();
        out += &line(&self.header, &vec![false; self.header.len()]);
        out += &rule;
        if !self.rows.is_empty() {
            for r in &self.rows {
                out += &line(r, &self.right);
            }
            out += &rule;
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A number as Go's `%.5g` prints it: at most five significant digits, exponent form
/// (`1.0486e+06`) from 10^5 up, trailing zeros dropped.
pub fn go_g5(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let sci = format!("{x:.4e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..5).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (4 - exp).max(0) as usize;
        trim(&format!("{x:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_go_does() {
        assert_eq!(go_g5(0.0), "0");
        assert_eq!(go_g5(3.0), "3");
        assert_eq!(go_g5(256.0), "256");
        assert_eq!(go_g5(65536.0), "65536");
        assert_eq!(go_g5(1048576.0), "1.0486e+06");
        assert_eq!(go_g5(1e6), "1e+06");
        assert_eq!(go_g5(18446744073709551616.0), "1.8447e+19");
    }

    #[test]
    fn tables_have_go_pretty_rules() {
        let mut t = Table::new(&["A", "NUMBER"]).align_right(1);
        t.push(vec!["long cell".into(), "1".into()]);
        assert_eq!(
            t.render(),
            "+-----------+--------+\n\
             | A         | NUMBER |\n\
             +-----------+--------+\n\
             | long cell |      1 |\n\
             +-----------+--------+\n"
        );
        let empty = Table::new(&["IP"]);
        assert_eq!(empty.render(), "+----+\n| IP |\n+----+\n");
    }
}
