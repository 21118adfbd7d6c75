//! The API's OpenAPI 3.1 description, generated from the handlers and served at `/openapi.json`.
//!
//! Each handler carries a `#[utoipa::path]` with its method, path, parameters and responses,
//! and each response type derives `ToSchema`; `lib.rs` registers every route through
//! `utoipa_axum::routes!`, which takes the path from that same annotation, so a route cannot
//! exist undescribed or be described at another path. What the annotations cannot know is
//! added here: the document's header, the bearer scheme, and for each group of routes behind
//! a scope its security requirement and its 401 and 403 answers ([`scoped`]).
//!
//! `/openapi.json` is open, like `/healthz`: it says how to call the API, not what it holds
//! (the README says as much), and a client generator must be able to read it before it has
//! a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Scope;
use crate::error::ErrorBody;

/// The name of the bearer-token scheme in the document.
const BEARER: &str = "bearer";

/// The document, written as JSON once when the router is built.
#[derive(Debug, Clone)]
pub struct Document(Arc<str>);

impl Document {
    pub(crate) fn new(api: OpenApi) -> Self {
        // Serialising a tree of strings and maps cannot fail; were it to, an error body
        // says so rather than a panic at start.
        let json = api.to_json().unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
        Document(json.into())
    }
}

/// The document's header and the components no handler names.
pub(crate) fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title("mekong")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Readings of a city's sensors: devices, series, points, aggregates, latest values, \
             and what the ingest path did. Times are accepted as RFC 3339 or epoch milliseconds \
             and returned as both. With API tokens configured, every operation that lists a \
             security requirement needs `Authorization: Bearer <token>` of that scope \
             (`admin` includes `read`).",
        ))
        .build();
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some("A token made by `mekong token create`, of scope `read` or `admin`."))
        .build();
    let components = ComponentsBuilder::new()
        .security_scheme(BEARER, SecurityScheme::Http(bearer))
        .schema_from::<ErrorBody>()
        .build();
    OpenApiBuilder::new().info(info).components(Some(components)).build()
}

/// Marks every operation of `router` as needing a token of `scope`, with the answers the
/// token check gives; the caller adds the layer that does the check.
pub(crate) fn scoped<S: Clone + Send + Sync + 'static>(mut router: OpenApiRouter<S>, scope: Scope) -> OpenApiRouter<S> {
    let requirement = SecurityRequirement::new(BEARER, [scope.as_str()]);
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                        .build(),
                )
                .build(),
        )
    };
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in
            [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
        {
            operation.security.get_or_insert_with(Vec::new).push(requirement.clone());
            let responses = &mut operation.responses.responses;
            responses.insert("401".into(), error("no valid bearer token"));
            responses.insert("403".into(), error(&format!("the token's scope does not cover {}", scope.as_str())));
        }
    }
    router
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 description of this API", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(State(document): State<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0.to_string())
}
