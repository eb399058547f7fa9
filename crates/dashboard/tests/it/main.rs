//! The dashboard against real Redis servers (and, for the page, a real browser).

mod actions;
mod browser;
mod series;
mod status;
mod support;
mod web;
mod webdriver;
