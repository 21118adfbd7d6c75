//! The files the browser loads, embedded in the binary: the page, its script and style, and
//! the pinned libraries with their licences. A library's path carries its version, so a new
//! version is a new path and the year-long cache of the old one never serves it.

/// The page served at `/`.
pub const INDEX: &[u8] = include_bytes!("../assets/index.html");

/// A file served under `/dashboard/`.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its path below `/dashboard/`.
    pub path: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Whether its path names its version (cached for a year), else revalidated by ETag.
    pub immutable: bool,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file under `/dashboard/`.
pub const ALL: &[Asset] = &[
    Asset { path: "app.js", bytes: include_bytes!("../assets/app.js"), content_type: JS, immutable: false },
    Asset { path: "app.css", bytes: include_bytes!("../assets/app.css"), content_type: CSS, immutable: false },
    Asset {
        path: "vendor/uplot-1.6.32/uPlot.iife.min.js",
        bytes: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
        content_type: JS,
        immutable: true,
    },
    Asset {
        path: "vendor/uplot-1.6.32/uPlot.min.css",
        bytes: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.min.css"),
        content_type: CSS,
        immutable: true,
    },
    Asset {
        path: "vendor/uplot-1.6.32/LICENSE",
        bytes: include_bytes!("../assets/vendor/uplot-1.6.32/LICENSE"),
        content_type: TEXT,
        immutable: true,
    },
    Asset {
        path: "vendor/leaflet-1.9.4/leaflet.js",
        bytes: include_bytes!("../assets/vendor/leaflet-1.9.4/leaflet.js"),
        content_type: JS,
        immutable: true,
    },
    Asset {
        path: "vendor/leaflet-1.9.4/leaflet.css",
        bytes: include_bytes!("../assets/vendor/leaflet-1.9.4/leaflet.css"),
        content_type: CSS,
        immutable: true,
    },
    Asset {
        path: "vendor/leaflet-1.9.4/LICENSE",
        bytes: include_bytes!("../assets/vendor/leaflet-1.9.4/LICENSE"),
        content_type: TEXT,
        immutable: true,
    },
];
