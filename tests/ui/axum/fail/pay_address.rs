use pay402::axum::pay;

#[pay(amount = "0.01", currency = "0x779ded0c9e1022225f8e0630b35a9b54be713736")]
async fn lower_case_currency() {}

#[pay(amount = "0.01", recipient = "0x5aAeb6053f3E94C9b9A09f33669435E7Ef1BeAed")]
async fn bad_checksum_recipient() {}

#[pay(amount = "0.01", recipient = "0x5aAeb6053F3E94C9")]
async fn short_recipient() {}

#[pay(amount = "0.01", currency = "0x0000000000000000000000000000000000000000")]
async fn zero_currency() {}

fn main() {}
