//! Picking the one image a screen sends per product: of the renditions the catalog lists (the
//! same picture at several widths), the smallest that is at least as wide as the slot in device
//! pixels, or the largest when none is wide enough. Never the whole list.

use shared_clients::Image;

/// The URL of the rendition of `images` that best fits `target` device pixels, if there is any.
pub fn best_fit(images: &[Image], target: u32) -> Option<String> {
    let wide_enough = images
        .iter()
        .filter(|image| image.width >= target)
        .min_by_key(|image| image.width);
    wide_enough
        .or_else(|| images.iter().max_by_key(|image| image.width))
        .map(|image| image.url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition(width: u32) -> Image {
        Image {
            url: format!("w{width}"),
            width,
            height: width * 3 / 4,
            alt: None,
        }
    }

    #[test]
    fn the_smallest_wide_enough_rendition_wins_else_the_largest() {
        let images: Vec<Image> = [1200, 600, 300, 100].map(rendition).into();
        assert_eq!(best_fit(&images, 160).as_deref(), Some("w300"));
        assert_eq!(best_fit(&images, 300).as_deref(), Some("w300"));
        assert_eq!(best_fit(&images, 80).as_deref(), Some("w100"));
        assert_eq!(best_fit(&images, 2000).as_deref(), Some("w1200"));
        assert_eq!(best_fit(&[], 100), None);
    }
}
