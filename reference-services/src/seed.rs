//! The deterministic data generator behind [`World::seeded`](crate::World::seeded).
//!
//! Everything comes from a small self-contained PRNG (SplitMix64), so the data depends only on the
//! seed and this file, never on the version of a random-number crate. Each product, user and
//! partner draws from its own stream, so product `p-00042` is the same whatever the catalog size.
//!
//! Some properties are placed by rule rather than by chance, so that tests can rely on them even
//! in a small world: every 7th product (from the 4th) is on sale, every 13th (from the 3rd) is low
//! on stock, every 31st (from the 8th) is out of stock, every 997th (from the 5th) is priced in USD;
//! every 10th user (from `u-0010`) has neither cart nor orders, every 3rd other user (from `u-0001`)
//! has a cart, and `u-0001` has at least five orders.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime, macros::datetime};

use crate::{
    cart::{Cart, CartItem},
    config::Config,
    order::{Address, Channel, ChannelKind, Order, OrderLine, OrderStatus, order_id},
    product::{Category, Image, Inventory, Money, Product, Rating, StockStatus},
};

/// The currency of almost every product.
pub(crate) const PRIMARY_CURRENCY: &str = "EUR";
/// The currency of a handful of products, for mixed-currency orders.
const SECOND_CURRENCY: &str = "USD";
/// "Now" for the seeded data: every seeded timestamp is at or before it.
const EPOCH: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);
/// Image widths of each product picture, largest first.
const RENDITIONS: [u32; 4] = [1200, 600, 300, 100];

/// SplitMix64: tiny, fast, good enough for test data, and stable forever.
struct Rng(u64);

impl Rng {
    /// A generator for one `stream` (a product, a user...) of one seed.
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next();
        rng
    }

    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// An index below `len` (which must not be 0).
    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.next() % len as u64).unwrap_or_default()
    }

    /// One of `items` (which must not be empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// True with the given probability in percent.
    fn percent(&mut self, chance: u64) -> bool {
        self.next() % 100 < chance
    }

    /// A whole number of seconds up to `max_seconds` before `from`.
    fn before(&mut self, from: OffsetDateTime, max_seconds: u64) -> OffsetDateTime {
        from - Duration::seconds(i64::try_from(self.between(0, max_seconds)).unwrap_or_default())
    }
}

/// Stream numbers, so products, users and partners never share random numbers.
const PRODUCT_STREAM: u64 = 1 << 40;
/// See [`PRODUCT_STREAM`].
const USER_STREAM: u64 = 2 << 40;
/// See [`PRODUCT_STREAM`].
const PARTNER_STREAM: u64 = 3 << 40;

/// A family of categories with the vocabulary of its products.
struct Department {
    /// Top-level category id and name.
    top: (&'static str, &'static str),
    /// Sub-categories (id, name).
    children: &'static [(&'static str, &'static str)],
    /// SKU prefix.
    code: &'static str,
    /// Product nouns.
    nouns: &'static [&'static str],
    /// Price range in whole currency units.
    price: (u64, u64),
    /// An attribute name and its possible values.
    attribute: (&'static str, &'static [&'static str]),
}

/// The category tree and vocabulary.
const DEPARTMENTS: &[Department] = &[
    Department {
        top: ("c-electronics", "Electronics"),
        children: &[
            ("c-phones", "Phones"),
            ("c-laptops", "Laptops"),
            ("c-audio", "Audio"),
            ("c-cameras", "Cameras"),
        ],
        code: "EL",
        nouns: &[
            "Headphones",
            "Speaker",
            "Smartphone",
            "Laptop",
            "Camera",
            "Charger",
            "Earbuds",
            "Tablet",
            "Monitor",
            "Keyboard",
        ],
        price: (15, 1900),
        attribute: (
            "connectivity",
            &["Bluetooth 5.3", "USB-C", "Wi-Fi 6", "Wired"],
        ),
    },
    Department {
        top: ("c-home", "Home"),
        children: &[
            ("c-kitchen", "Kitchen"),
            ("c-furniture", "Furniture"),
            ("c-garden", "Garden"),
        ],
        code: "HO",
        nouns: &[
            "Kettle",
            "Chair",
            "Lamp",
            "Frying Pan",
            "Table",
            "Planter",
            "Rug",
            "Knife Set",
            "Shelf",
            "Cushion",
        ],
        price: (8, 900),
        attribute: ("room", &["Kitchen", "Living room", "Bedroom", "Garden"]),
    },
    Department {
        top: ("c-fashion", "Fashion"),
        children: &[
            ("c-shoes", "Shoes"),
            ("c-outerwear", "Outerwear"),
            ("c-accessories", "Accessories"),
        ],
        code: "FA",
        nouns: &[
            "Sneakers",
            "Jacket",
            "Scarf",
            "Boots",
            "Backpack",
            "Hoodie",
            "Sunglasses",
            "Belt",
            "Raincoat",
            "Cap",
        ],
        price: (10, 400),
        attribute: ("size", &["XS", "S", "M", "L", "XL", "42", "44"]),
    },
    Department {
        top: ("c-sports", "Sports"),
        children: &[
            ("c-cycling", "Cycling"),
            ("c-running", "Running"),
            ("c-camping", "Camping"),
        ],
        code: "SP",
        nouns: &[
            "Bike Helmet",
            "Running Shoes",
            "Tent",
            "Water Bottle",
            "Yoga Mat",
            "Sleeping Bag",
            "Bike Light",
            "Dumbbell",
            "Trail Pack",
            "Stopwatch",
        ],
        price: (6, 1200),
        attribute: ("sport", &["Cycling", "Running", "Hiking", "Fitness"]),
    },
    Department {
        top: ("c-books", "Books"),
        children: &[("c-fiction", "Fiction"), ("c-cookbooks", "Cookbooks")],
        code: "BO",
        nouns: &[
            "Novel",
            "Cookbook",
            "Atlas",
            "Anthology",
            "Guide",
            "Poetry Collection",
            "Memoir",
            "Thriller",
        ],
        price: (5, 60),
        attribute: ("format", &["Hardcover", "Paperback", "E-book"]),
    },
    Department {
        top: ("c-toys", "Toys"),
        children: &[("c-puzzles", "Puzzles"), ("c-outdoor-toys", "Outdoor Toys")],
        code: "TO",
        nouns: &[
            "Puzzle",
            "Building Set",
            "Kite",
            "Board Game",
            "Plush Bear",
            "Toy Car",
            "Doll House",
        ],
        price: (4, 250),
        attribute: ("age", &["3+", "6+", "8+", "12+"]),
    },
    Department {
        top: ("c-beauty", "Beauty"),
        children: &[("c-skincare", "Skincare"), ("c-fragrance", "Fragrance")],
        code: "BE",
        nouns: &[
            "Face Cream",
            "Perfume",
            "Shampoo",
            "Lip Balm",
            "Serum",
            "Soap Bar",
        ],
        price: (3, 180),
        attribute: ("skin_type", &["All", "Dry", "Oily", "Sensitive"]),
    },
    Department {
        top: ("c-grocery", "Grocery"),
        children: &[("c-coffee", "Coffee & Tea")],
        code: "GR",
        nouns: &[
            "Coffee Beans",
            "Green Tea",
            "Olive Oil",
            "Chocolate",
            "Honey",
            "Pasta",
        ],
        price: (2, 45),
        attribute: (
            "origin",
            &["Italy", "Colombia", "Japan", "Greece", "Belgium"],
        ),
    },
];

/// Adjectives of product names.
const ADJECTIVES: &[&str] = &[
    "Aurora",
    "Nimbus",
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Fusion",
    "Granite",
    "Horizon",
    "Ivory",
    "Juniper",
    "Kinetic",
    "Lumen",
    "Midnight",
    "Nordic",
    "Onyx",
    "Pulse",
    "Quartz",
    "Radiant",
    "Summit",
    "Terra",
    "Ultra",
    "Velvet",
    "Willow",
    "Zephyr",
    "Crème",
    "Señorita",
    "Über",
];

/// Model suffixes of product names (empty for none).
const MODELS: &[&str] = &[
    "", "", "", " Pro", " Mini", " Max", " Lite", " II", " X", " 2025",
];

/// Brands; a few with non-ASCII letters, to exercise case-insensitive search.
const BRANDS: &[&str] = &[
    "Acme",
    "Brightline",
    "Contoso",
    "Dunmore",
    "Evergreen",
    "Fabrikam",
    "Globex",
    "Helios",
    "Initech",
    "Jupiter Works",
    "Kestrel",
    "Lindqvist",
    "Müller & Söhne",
    "Northwind",
    "Oakridge",
    "Pioneer",
    "Quill",
    "Riverstone",
    "Solace",
    "Tailspin",
    "Umbra",
    "Vértice",
    "Wayfarer",
    "Xenon",
    "Yellowtail",
    "Zenith",
    "Østerberg",
    "Café Lumière",
];

/// Colours, an attribute of every product.
const COLORS: &[&str] = &[
    "black", "white", "red", "blue", "green", "grey", "beige", "navy", "olive", "orange",
];

/// Materials, an attribute of every product.
const MATERIALS: &[&str] = &[
    "aluminium",
    "steel",
    "cotton",
    "wool",
    "oak",
    "recycled plastic",
    "glass",
    "ceramic",
    "leather",
    "bamboo",
];

/// Sentences of product descriptions.
const BLURBS: &[&str] = &[
    "Built to last and easy to love.",
    "Our best seller, now even better.",
    "Designed in Europe, made for everyday use.",
    "Light, durable and ready for anything.",
    "A quiet classic with a modern twist.",
    "Thoughtful details, honest materials.",
];

/// Cities of shipping addresses, with their country.
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "DE"),
    ("Paris", "FR"),
    ("Amsterdam", "NL"),
    ("Madrid", "ES"),
    ("Milano", "IT"),
    ("Wien", "AT"),
    ("Bruxelles", "BE"),
    ("København", "DK"),
];

/// Partners: id, short name for customer references, how many orders they have.
const PARTNERS: &[(&str, &str, usize)] = &[
    ("partner-acme", "acme", 40),
    ("partner-globex", "globex", 25),
    ("partner-initech", "initech", 0),
];

/// Seeded data with particular properties, for [`World`](crate::World)'s helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fixtures {
    /// Every user id, in order.
    pub(crate) users: Vec<String>,
    /// Every partner id.
    pub(crate) partners: Vec<String>,
    /// A user whose cart has lines.
    pub(crate) user_with_cart: String,
    /// A user with at least five orders.
    pub(crate) user_with_orders: String,
    /// A user with neither cart nor orders.
    pub(crate) fresh_user: String,
    /// A partner with orders.
    pub(crate) partner_with_orders: String,
    /// A partner without orders.
    pub(crate) partner_without_orders: String,
    /// A product that is out of stock.
    pub(crate) out_of_stock_product: String,
    /// A product that is low on stock.
    pub(crate) low_stock_product: String,
    /// A product on sale, in the primary currency.
    pub(crate) on_sale_product: String,
    /// An in-stock product in the primary currency.
    pub(crate) regular_product: String,
    /// A product in the second currency.
    pub(crate) foreign_currency_product: String,
}

/// Everything a world is seeded with.
pub(crate) struct Seeded {
    /// The catalog, in id order.
    pub(crate) products: Vec<Product>,
    /// The category tree, parents before children.
    pub(crate) categories: Vec<Category>,
    /// The carts with lines.
    pub(crate) carts: Vec<Cart>,
    /// Every order, oldest first, with ids in that order.
    pub(crate) orders: Vec<Order>,
    /// Ids of seeded data with particular properties.
    pub(crate) fixtures: Fixtures,
}

/// Generates the data of a world.
pub(crate) fn generate(config: &Config) -> Seeded {
    let categories = categories();
    let product_count = config.products.max(Config::MIN_PRODUCTS);
    let products: Vec<Product> = (0..product_count)
        .map(|index| product(config.seed, index, &categories))
        .collect();
    // Products carts and orders may hold: in stock, in the primary currency.
    let orderable: Vec<&Product> = products
        .iter()
        .filter(|p| p.price.currency == PRIMARY_CURRENCY && p.inventory.available > 0)
        .collect();

    let user_count = config.users.max(Config::MIN_USERS);
    let users: Vec<String> = (1..=user_count).map(|n| format!("u-{n:04}")).collect();
    let mut carts = Vec::new();
    let mut orders = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let mut rng = Rng::new(config.seed, USER_STREAM + index as u64);
        if is_fresh_user(index) {
            continue;
        }
        if index % 3 == 0 {
            carts.push(cart(&mut rng, user, &orderable));
        }
        let count = if index == 0 {
            rng.between(5, 8)
        } else {
            rng.between(0, 6)
        };
        for _ in 0..count {
            let kind = if rng.percent(50) {
                ChannelKind::Web
            } else {
                ChannelKind::Mobile
            };
            let channel = Channel {
                kind,
                partner_id: None,
            };
            orders.push(order(&mut rng, user.clone(), channel, &orderable));
        }
    }
    for (index, (partner, short, count)) in PARTNERS.iter().enumerate() {
        let mut rng = Rng::new(config.seed, PARTNER_STREAM + index as u64);
        for _ in 0..*count {
            let customer = format!("{short}-cust-{:04}", rng.between(1, 200));
            let channel = Channel {
                kind: ChannelKind::Partner,
                partner_id: Some((*partner).to_owned()),
            };
            orders.push(order(&mut rng, customer, channel, &orderable));
        }
    }
    orders.retain(|order| !order.lines.is_empty());
    // Oldest first (ties by the order of generation), then number them in that order.
    orders.sort_by_key(|order| order.created_at);
    for (index, order) in orders.iter_mut().enumerate() {
        order.id = order_id(index as u64 + 1);
    }

    let fixtures = fixtures(&products, &users, &carts, &orders);
    Seeded {
        products,
        categories,
        carts,
        orders,
        fixtures,
    }
}

/// Whether the user at `index` gets neither cart nor orders.
fn is_fresh_user(index: usize) -> bool {
    index % 10 == 9
}

/// The category tree: each department's top category, then its children.
fn categories() -> Vec<Category> {
    let mut categories = Vec::new();
    for department in DEPARTMENTS {
        let (top_id, top_name) = department.top;
        categories.push(Category {
            id: top_id.to_owned(),
            name: top_name.to_owned(),
            parent_id: None,
        });
        for (id, name) in department.children {
            categories.push(Category {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                parent_id: Some(top_id.to_owned()),
            });
        }
    }
    categories
}

/// The department a category belongs to.
fn department_of(category: &Category) -> &'static Department {
    let top = category.parent_id.as_deref().unwrap_or(&category.id);
    DEPARTMENTS
        .iter()
        .find(|department| department.top.0 == top)
        .unwrap_or(&DEPARTMENTS[0])
}

/// The product at `index` (id `p-{index+1:05}`).
fn product(seed: u64, index: usize, categories: &[Category]) -> Product {
    let mut rng = Rng::new(seed, PRODUCT_STREAM + index as u64);
    let number = index + 1;
    let id = format!("p-{number:05}");
    let category = rng.pick(categories);
    let department = department_of(category);
    let name = format!(
        "{} {}{}",
        rng.pick(ADJECTIVES),
        rng.pick(department.nouns),
        rng.pick(MODELS)
    );
    let brand = (*rng.pick(BRANDS)).to_owned();
    let currency = if index % 997 == 4 {
        SECOND_CURRENCY
    } else {
        PRIMARY_CURRENCY
    };
    let whole = i64::try_from(rng.between(department.price.0, department.price.1)).unwrap_or(1);
    let cents = *rng.pick(&[99, 99, 99, 95, 49, 0]);
    let price = Money {
        amount_minor: whole * 100 + cents,
        currency: currency.to_owned(),
    };
    let list_price = (index % 7 == 3).then(|| {
        let markup = i64::try_from(rng.between(110, 160)).unwrap_or(120);
        Money {
            amount_minor: (price.amount_minor * markup / 100) / 100 * 100 + 99,
            currency: currency.to_owned(),
        }
    });
    let available = if index % 31 == 7 {
        0
    } else if index % 13 == 2 {
        u32::try_from(rng.between(1, 5)).unwrap_or(1)
    } else {
        u32::try_from(rng.between(6, 500)).unwrap_or(6)
    };
    let rating_count = u32::try_from(rng.between(0, 2500)).unwrap_or_default();
    let average = if rating_count == 0 {
        0.0
    } else {
        f64::from(u32::try_from(rng.between(10, 50)).unwrap_or(40)) / 10.0
    };
    let images = RENDITIONS
        .iter()
        .map(|&width| Image {
            url: format!("https://images.example.com/products/{id}/main-{width}.jpg"),
            width,
            height: width * 3 / 4,
            alt: name.clone(),
        })
        .collect();
    let mut attributes = BTreeMap::new();
    attributes.insert("color".to_owned(), (*rng.pick(COLORS)).to_owned());
    attributes.insert("material".to_owned(), (*rng.pick(MATERIALS)).to_owned());
    let (attribute, values) = department.attribute;
    attributes.insert(attribute.to_owned(), (*rng.pick(values)).to_owned());
    let description = format!("{name} by {brand}. {}", rng.pick(BLURBS));
    Product {
        sku: format!("{}-{number:06}", department.code),
        category_id: category.id.clone(),
        updated_at: rng.before(EPOCH, 365 * 24 * 3600),
        id,
        name,
        description,
        brand,
        price,
        list_price,
        images,
        attributes,
        rating: Rating {
            average,
            count: rating_count,
        },
        inventory: Inventory::of(available),
    }
}

/// A cart with one to four lines.
fn cart(rng: &mut Rng, user: &str, orderable: &[&Product]) -> Cart {
    let mut cart = Cart::empty(user);
    if orderable.is_empty() {
        return cart;
    }
    let updated_at = rng.before(EPOCH, 30 * 24 * 3600);
    let lines = rng.between(1, 4);
    for _ in 0..lines {
        let product = rng.pick(orderable);
        if cart.items.iter().any(|item| item.product_id == product.id) {
            continue;
        }
        cart.items.push(CartItem {
            product_id: product.id.clone(),
            quantity: u32::try_from(rng.between(1, 3)).unwrap_or(1),
            added_at: rng.before(updated_at, 7 * 24 * 3600),
        });
    }
    cart.items.sort_by_key(|item| item.added_at);
    cart.version = cart.items.len() as u64 + rng.between(0, 4);
    cart.updated_at = Some(updated_at);
    cart
}

/// An order with one to four lines priced from the catalog (its id is set later).
fn order(rng: &mut Rng, user_id: String, channel: Channel, orderable: &[&Product]) -> Order {
    let created_at = rng.before(EPOCH, 400 * 24 * 3600);
    let mut lines: Vec<OrderLine> = Vec::new();
    if !orderable.is_empty() {
        for _ in 0..rng.between(1, 4) {
            let product = rng.pick(orderable);
            if lines.iter().any(|line| line.product_id == product.id) {
                continue;
            }
            lines.push(OrderLine {
                product_id: product.id.clone(),
                quantity: u32::try_from(rng.between(1, 3)).unwrap_or(1),
                unit_price: product.price.clone(),
            });
        }
    }
    let total = Money {
        amount_minor: lines
            .iter()
            .map(|line| line.unit_price.amount_minor * i64::from(line.quantity))
            .sum(),
        currency: PRIMARY_CURRENCY.to_owned(),
    };
    let status = match rng.between(0, 99) {
        0..=14 => OrderStatus::Pending,
        15..=29 => OrderStatus::Confirmed,
        30..=44 => OrderStatus::Shipped,
        45..=84 => OrderStatus::Delivered,
        _ => OrderStatus::Cancelled,
    };
    let updated_at = (status != OrderStatus::Pending).then(|| {
        created_at
            + Duration::seconds(i64::try_from(rng.between(3600, 10 * 24 * 3600)).unwrap_or(3600))
    });
    let shipping_address = rng.percent(80).then(|| {
        let (city, country) = *rng.pick(CITIES);
        Address {
            name: Some(format!("Customer {}", rng.between(1, 9999))),
            line1: Some(format!("{} Market Street", rng.between(1, 250))),
            city: Some(city.to_owned()),
            postal_code: Some(format!("{:05}", rng.between(1000, 99999))),
            country: Some(country.to_owned()),
        }
    });
    Order {
        id: String::new(),
        user_id,
        channel,
        status,
        lines,
        total,
        shipping_address,
        created_at,
        updated_at,
    }
}

/// Finds the seeded data the [`World`](crate::World) helpers name. The rules in the module docs
/// guarantee each exists; the fallbacks only keep this total.
fn fixtures(products: &[Product], users: &[String], carts: &[Cart], orders: &[Order]) -> Fixtures {
    let first_product = |wanted: &dyn Fn(&Product) -> bool| {
        products
            .iter()
            .find(|p| wanted(p))
            .or(products.first())
            .map(|p| p.id.clone())
            .unwrap_or_default()
    };
    let primary = |p: &Product| p.price.currency == PRIMARY_CURRENCY;
    let orders_of = |user: &str| {
        orders
            .iter()
            .filter(|order| order.channel.kind != ChannelKind::Partner && order.user_id == user)
            .count()
    };
    let first_user = |wanted: &dyn Fn(&str) -> bool| {
        users
            .iter()
            .find(|user| wanted(user))
            .or(users.first())
            .cloned()
            .unwrap_or_default()
    };
    let has_cart = |user: &str| {
        carts
            .iter()
            .any(|cart| cart.user_id == user && !cart.items.is_empty())
    };
    let partner_orders = |partner: &str| {
        orders
            .iter()
            .filter(|order| order.channel.partner_id.as_deref() == Some(partner))
            .count()
    };
    let partners: Vec<String> = PARTNERS.iter().map(|(id, _, _)| (*id).to_owned()).collect();
    let first_partner = |wanted: &dyn Fn(usize) -> bool| {
        partners
            .iter()
            .find(|partner| wanted(partner_orders(partner)))
            .or(partners.first())
            .cloned()
            .unwrap_or_default()
    };
    Fixtures {
        user_with_cart: first_user(&|user| has_cart(user)),
        user_with_orders: first_user(&|user| orders_of(user) >= 5),
        fresh_user: users
            .iter()
            .enumerate()
            .find(|(index, _)| is_fresh_user(*index))
            .map(|(_, user)| user.clone())
            .unwrap_or_else(|| first_user(&|user| !has_cart(user) && orders_of(user) == 0)),
        partner_with_orders: first_partner(&|count| count >= 10),
        partner_without_orders: first_partner(&|count| count == 0),
        out_of_stock_product: first_product(&|p| p.inventory.status == StockStatus::OutOfStock),
        low_stock_product: first_product(&|p| p.inventory.status == StockStatus::LowStock),
        on_sale_product: first_product(&|p| primary(p) && p.list_price.is_some()),
        regular_product: first_product(&|p| {
            primary(p) && p.list_price.is_none() && p.inventory.status == StockStatus::InStock
        }),
        foreign_currency_product: first_product(&|p| !primary(p)),
        users: users.to_vec(),
        partners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data() {
        let config = Config {
            products: 300,
            users: 40,
            ..Config::default()
        };
        let a = generate(&config);
        let b = generate(&config);
        assert_eq!(a.products, b.products);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.carts, b.carts);
        assert_eq!(a.fixtures, b.fixtures);
        let other = generate(&Config { seed: 7, ..config });
        assert_ne!(a.products, other.products);
    }

    #[test]
    fn products_do_not_depend_on_the_catalog_size() {
        let small = generate(&Config {
            products: 50,
            users: 10,
            ..Config::default()
        });
        let large = generate(&Config {
            products: 500,
            users: 10,
            ..Config::default()
        });
        assert_eq!(small.products[..], large.products[..50]);
    }

    #[test]
    fn even_a_tiny_world_has_every_fixture() {
        let seeded = generate(&Config {
            products: 1,
            users: 1,
            ..Config::default()
        });
        let f = &seeded.fixtures;
        let product = |id: &str| seeded.products.iter().find(|p| p.id == id);
        assert_eq!(
            product(&f.out_of_stock_product).map(|p| p.inventory.status),
            Some(StockStatus::OutOfStock)
        );
        assert_eq!(
            product(&f.low_stock_product).map(|p| p.inventory.status),
            Some(StockStatus::LowStock)
        );
        assert!(product(&f.on_sale_product).is_some_and(|p| p.list_price.is_some()));
        assert!(
            product(&f.foreign_currency_product)
                .is_some_and(|p| p.price.currency == SECOND_CURRENCY)
        );
        assert_eq!(f.user_with_cart, "u-0001");
        assert_eq!(f.user_with_orders, "u-0001");
        assert_eq!(f.fresh_user, "u-0010");
        assert_eq!(f.partner_with_orders, "partner-acme");
        assert_eq!(f.partner_without_orders, "partner-initech");
    }

    #[test]
    fn list_prices_are_above_prices() {
        let seeded = generate(&Config::default());
        for product in &seeded.products {
            if let Some(list_price) = &product.list_price {
                assert!(
                    list_price.amount_minor > product.price.amount_minor,
                    "{}",
                    product.id
                );
            }
        }
    }
}
