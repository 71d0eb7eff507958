use pay402::actix::{Credential, Receipt, X402Payment, pay, x402};

#[x402(price = "$0.01")]
#[pay(amount = "0.01")]
async fn x402_payment(payment: X402Payment) -> String {
    format!("{:?}", payment.payer())
}

#[pay(amount = "0.01")]
#[x402(price = "$0.01")]
async fn mpp_types(credential: Credential, _receipt: Receipt) -> String {
    format!("{:?}", credential.source)
}

fn main() {}
