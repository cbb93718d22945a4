//! Amounts in minor units, formatted per currency ("NGN" 123450 → "₦1,234.50").

/// Symbol and number of minor-unit digits of a currency (ISO 4217).
fn currency(code: &str) -> (&'static str, u32) {
    match code.to_ascii_uppercase().as_str() {
        "NGN" => ("₦", 2),
        "USD" => ("$", 2),
        "EUR" => ("€", 2),
        "GBP" => ("£", 2),
        "GHS" => ("GH₵", 2),
        "KES" => ("KSh ", 2),
        "ZAR" => ("R ", 2),
        "CAD" => ("CA$", 2),
        "JPY" => ("¥", 0),
        "KRW" => ("₩", 0),
        _ => ("", 2),
    }
}

pub fn format_amount(minor: i64, code: &str) -> String {
    let (symbol, digits) = currency(code);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = 10_u64.pow(digits);
    let major = group_thousands(abs / scale);
    let number = if digits == 0 {
        major
    } else {
        format!("{major}.{:0width$}", abs % scale, width = digits as usize)
    };
    if symbol.is_empty() {
        format!("{sign}{number} {}", code.to_ascii_uppercase())
    } else {
        format!("{sign}{symbol}{number}")
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_amount;

    #[test]
    fn formats_minor_units() {
        assert_eq!(format_amount(123_450, "NGN"), "₦1,234.50");
        assert_eq!(format_amount(5, "USD"), "$0.05");
        assert_eq!(format_amount(100_000_000, "NGN"), "₦1,000,000.00");
        assert_eq!(format_amount(-250, "EUR"), "-€2.50");
        assert_eq!(format_amount(1500, "JPY"), "¥1,500");
        assert_eq!(format_amount(1999, "XYZ"), "19.99 XYZ");
    }
}
