//! `GET /m/v1/home`: featured products and top categories for everyone; for a signed-in user
//! also the cart badge count and the latest order's status. The parts are fetched concurrently
//! and each is optional: a part that fails is left out and named in `degraded`. Only when every
//! part fails is the screen an error.

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::Serialize;
use shared_clients::{
    CategoryId, ClientError, OrderQuery, OrderStatus, Owner, ProductQuery, UserId,
};
use utoipa::ToSchema;

use super::{card::Card, is_zero, order::status_text};
use crate::{
    Screen,
    error::ApiError,
    extract::{Ctx, ImageHint, MaybeUser},
    money::Currency,
    openapi::{OrderStatusDoc, ProblemResponse},
    state::AppState,
};

/// The home screen.
#[derive(Debug, Serialize, ToSchema)]
pub struct Home {
    /// The currency of every price on the screen, stated once.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// Newest products, as cards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    featured: Vec<Card>,
    /// Top-level categories, as chips.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    categories: Vec<Chip>,
    /// Items in the signed-in user's cart (the badge); absent when 0 or anonymous.
    #[serde(skip_serializing_if = "is_zero")]
    cart_count: u32,
    /// The signed-in user's most recent order, for a status banner.
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_order: Option<OrderBanner>,
    /// Parts that could not be loaded (`featured`, `categories`, `cart`, `latest_order`);
    /// absent when nothing is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<HomePart>,
    /// Parts shown from an older copy because the service failed (`categories`); absent when
    /// nothing is old.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<HomePart>,
}

/// An optional part of the home screen, as named in its `degraded` and `stale` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HomePart {
    /// The featured products.
    Featured,
    /// The top categories.
    Categories,
    /// The cart badge (signed in).
    Cart,
    /// The latest order's banner (signed in).
    LatestOrder,
}

impl HomePart {
    /// The name, as in the payload (for the log).
    fn as_str(self) -> &'static str {
        match self {
            Self::Featured => "featured",
            Self::Categories => "categories",
            Self::Cart => "cart",
            Self::LatestOrder => "latest_order",
        }
    }
}

/// A category the home screen links to.
#[derive(Debug, Serialize, ToSchema)]
struct Chip {
    /// To open the product list of the category.
    #[schema(value_type = String)]
    id: CategoryId,
    /// The label.
    name: String,
}

/// The latest order's status banner.
#[derive(Debug, Serialize, ToSchema)]
struct OrderBanner {
    /// To open the order detail screen.
    id: String,
    /// Machine-readable status, for the app's icon.
    #[schema(value_type = OrderStatusDoc)]
    status: OrderStatus,
    /// The status, ready to show.
    status_text: &'static str,
}

/// The home screen.
///
/// For everyone: featured products and top categories (`public`, cacheable). With a bearer token
/// also the cart badge and the latest order (`private, no-store`). Each part is fetched
/// concurrently and is optional: a part that fails is left out and named in `degraded`; only
/// when every part fails is the screen an error.
#[utoipa::path(
    get, path = "/m/v1/home", tag = "catalog", operation_id = "getHome",
    params(ImageHint),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The home screen", body = Home),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    MaybeUser(user): MaybeUser,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let config = state.config();
    let downstream = state.downstream();
    let featured_query = ProductQuery {
        limit: Some(config.home_featured),
        ..ProductQuery::default()
    };
    let featured = downstream.catalog().list(&ctx, &featured_query);
    let categories = downstream.catalog().categories(&ctx);
    let signed_in = async {
        let Some(user) = &user else {
            return None;
        };
        Some(futures::join!(
            cart_count(&state, &ctx, user),
            latest_order(&state, &ctx, user)
        ))
    };
    let (featured, categories, signed_in) = futures::join!(featured, categories, signed_in);

    let mut degraded = Vec::new();
    let mut failure: Option<ClientError> = None;
    let mut attempted = 2;
    let mut note = |name: HomePart, error: ClientError| {
        tracing::warn!(
            part = name.as_str(),
            service = error.service().as_str(),
            kind = error.kind().code(),
            %error,
            "home screen part left out"
        );
        degraded.push(name);
        failure.get_or_insert(error);
    };
    let mut currency = Currency::new();
    let image_px = hint.target(config.images.card);
    let featured = match featured {
        Ok(page) => page
            .items
            .iter()
            .map(|product| Card::of(product, &mut currency, image_px))
            .collect(),
        Err(error) => {
            note(HomePart::Featured, error);
            Vec::new()
        }
    };
    let mut stale = Vec::new();
    let categories = match categories {
        Ok(categories) => {
            if categories.is_stale() {
                stale.push(HomePart::Categories);
            }
            categories
                .iter()
                .filter(|category| category.parent_id.is_none())
                .take(config.home_categories)
                .map(|category| Chip {
                    id: category.id.clone(),
                    name: category.name.clone(),
                })
                .collect()
        }
        Err(error) => {
            note(HomePart::Categories, error);
            Vec::new()
        }
    };
    let (mut cart_count, mut latest_order) = (0, None);
    if let Some((count, latest)) = signed_in {
        attempted += 2;
        match count {
            Ok(count) => cart_count = count,
            Err(error) => note(HomePart::Cart, error),
        }
        match latest {
            Ok(latest) => latest_order = latest,
            Err(error) => note(HomePart::LatestOrder, error),
        }
    }
    if degraded.len() == attempted
        && let Some(error) = failure
    {
        return Err(ApiError::Downstream(error));
    }
    let is_degraded = !degraded.is_empty() || !stale.is_empty();
    let home = Home {
        currency: currency.into_code(),
        featured,
        categories,
        cart_count,
        latest_order,
        degraded,
        stale,
    };
    let screen = if user.is_some() {
        Screen::private(home)
    } else {
        Screen::public(home, config.catalog_max_age)
    };
    Ok(screen
        .degraded(is_degraded)
        .vary("Authorization")
        .vary("DPR")
        .vary("Width")
        .into_response())
}

/// The number of items in the user's cart (the sum of the quantities).
async fn cart_count(
    state: &AppState,
    ctx: &shared_clients::RequestContext,
    user: &UserId,
) -> Result<u32, ClientError> {
    let cart = state.downstream().carts().get(ctx, user).await?;
    Ok(cart.items.iter().map(|item| item.quantity).sum())
}

/// The user's most recent order, if any.
async fn latest_order(
    state: &AppState,
    ctx: &shared_clients::RequestContext,
    user: &UserId,
) -> Result<Option<OrderBanner>, ClientError> {
    let query = OrderQuery {
        limit: Some(1),
        ..OrderQuery::default()
    };
    let page = state
        .downstream()
        .orders()
        .list(ctx, &Owner::User(user.clone()), &query)
        .await?;
    Ok(page.items.into_iter().next().map(|order| OrderBanner {
        id: order.id.to_string(),
        status: order.status,
        status_text: status_text(order.status),
    }))
}
