//! Live audio written straight onto listeners' HTTP/2 connections: the gRPC port's sockets are
//! wrapped ([`conn`]) so that the live writer threads can put a page's DATA frames between
//! hyper's frames, one vectored write per listener, while hyper keeps serving everything else.

pub mod body;
pub mod conn;
mod detached;
pub mod frames;
pub mod goaway;

pub use body::{DirectBody, H2Sink};
pub use conn::{Conn, ConnInfo, ConnIo};
