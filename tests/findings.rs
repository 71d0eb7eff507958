//! One regression test per finding of the security review (`../shared/notes/security-review.md`,
//! table in SECURITY.md): each reproduces the review's attack through HTTP, or through the client
//! API for buyer-side findings, and fails without its fix.

mod support;

mod findings {
    pub(crate) mod autopay;
    pub(crate) mod completion;
    pub(crate) mod mpp_charge;
    pub(crate) mod mpp_session;
    pub(crate) mod routes;
    pub(crate) mod x402;
}
