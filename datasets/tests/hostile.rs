//! Dataset readers against files that lie: IDX headers and CIFAR batches claiming gigantic sizes,
//! corrupt compressed streams, images whose headers claim more pixels than anything could hold,
//! and links inside image folders. Each is refused with a message naming the file and the place,
//! before anything is read or allocated in proportion to the claim.
//!
//! The huge files are sparse (`File::set_len`): they take no disk space, and reading one whole
//! would need a tebibyte of memory, so these tests pass only because every reader compares sizes
//! before it reads.

use std::fs::File;
use std::path::{Path, PathBuf};

use cnnc_data::cifar::read_cifar_batch;
use cnnc_data::idx::{read_idx_images, read_idx_labels};
use cnnc_data::{
    DataError, ImageShape, MAX_DATA_BYTES, MAX_IMAGES, image_folder, image_folder_splits_for,
};

/// One tebibyte: what sparse files claim to hold.
const TIB: u64 = 1 << 40;

/// A sparse file of `len` bytes that starts with `head`.
fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).expect("head written");
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
}

/// An IDX header: magic then dimensions, big-endian.
fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// `reason` of a [`DataError::BadHeader`] at byte 4 of `path`.
fn bad_count(error: DataError, path: &Path) -> String {
    match error {
        DataError::BadHeader {
            path: p,
            offset: 4,
            reason,
        } if p == path => reason,
        other => panic!("{other}"),
    }
}

#[test]
fn idx_headers_claiming_too_much_are_refused_unread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images-idx3-ubyte");
    // 2^32 - 1 images of 28x28, in a sparse file of exactly the size that claims.
    let header = idx_header(0x803, &[u32::MAX, 28, 28]);
    sparse(&images, &header, 16 + 784 * u64::from(u32::MAX));
    let claim = format!(
        "it claims 4294967295 images, more than the limit of {MAX_IMAGES}; the file is corrupt \
         or not an IDX file"
    );
    assert_eq!(
        bad_count(read_idx_images(&images).expect_err("refused"), &images),
        claim
    );
    // Compressed, the claim is weighed against the most a file of that size can decompress to.
    let gz = dir.path().join("images-idx3-ubyte.gz");
    let compressed = gzip(&header);
    std::fs::write(&gz, &compressed).expect("written");
    let len = compressed.len() as u64;
    assert_eq!(
        read_idx_images(&gz).expect_err("refused").to_string(),
        format!(
            "{}: header claims {} bytes of data but a {len}-byte file holds at most {}; the file \
             is corrupt or not an IDX file",
            gz.display(),
            784 * u64::from(u32::MAX),
            len * 1032 + 1024
        )
    );

    // Few images, but each of 65536x65536 pixels.
    let huge = idx_header(0x803, &[2, 65536, 65536]);
    sparse(&images, &huge, 16 + 2 * (1 << 32));
    assert_eq!(
        bad_count(read_idx_images(&images).expect_err("refused"), &images),
        format!(
            "it claims 8589934592 bytes of data, more than the limit of {MAX_DATA_BYTES} (4 GiB); \
             the file is corrupt or not an IDX file"
        )
    );

    let labels = dir.path().join("labels-idx1-ubyte");
    sparse(
        &labels,
        &idx_header(0x801, &[u32::MAX]),
        8 + u64::from(u32::MAX),
    );
    assert_eq!(
        bad_count(read_idx_labels(&labels, 10).expect_err("refused"), &labels),
        format!(
            "it claims 4294967295 labels, more than the limit of {MAX_IMAGES}; the file is \
             corrupt or not an IDX file"
        )
    );
}

#[test]
fn a_cut_gzip_stream_says_how_far_it_decoded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("images-idx3-ubyte.gz");
    let mut raw = idx_header(0x803, &[64, 28, 28]);
    // Pixels that do not compress to nothing, so the cut falls inside the data.
    raw.extend((0..64 * 784u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let compressed = gzip(&raw);
    std::fs::write(&path, &compressed[..compressed.len() / 2]).expect("written");
    match read_idx_images(&path).expect_err("refused") {
        DataError::Gzip {
            path: p,
            decoded,
            reason,
        } => {
            assert_eq!(p, path);
            assert!(0 < decoded && decoded < raw.len() as u64, "{decoded}");
            assert_eq!(reason, "incomplete deflate stream");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn cifar_batches_beyond_four_gibibytes_are_refused_unread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data_batch_1.bin");
    let len = 3073 * (TIB / 3073);
    sparse(&path, &[0; 3073], len);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let error = read_cifar_batch(&path, 10, &mut images, &mut labels).expect_err("refused");
    assert!(
        matches!(&error, DataError::FileTooLarge { path: p, len: l, limit, .. }
            if *p == path && *l == len && *limit == MAX_DATA_BYTES),
        "{error}"
    );
    assert!(images.is_empty() && labels.is_empty());
}

#[test]
fn images_claiming_huge_sizes_are_refused_by_the_decoder_limits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let class = dir.path().join("cat");
    std::fs::create_dir(&class).expect("dir");
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    // IHDR's width and height, then its CRC over the chunk type and data.
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let path: PathBuf = class.join("bomb.png");
    std::fs::write(&path, &png).expect("written");
    let error = image_folder(dir.path()).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot decode image: Format error decoding Png: the header claims \
             100000x100000 pixels but a {}-byte file holds at most {}; the file is damaged, too \
             large or not a PNG or JPEG image: replace or remove it",
            path.display(),
            png.len(),
            png.len() * 8 * 1032
        )
    );
    // Padded after its end to a size that could hold the pixels, it reaches the decoder's own
    // memory limit, which refuses it before allocating.
    png.resize(1_300_000, 0);
    std::fs::write(&path, &png).expect("written");
    let error = image_folder(dir.path()).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot decode image: Memory limit exceeded; the file is damaged, too large or \
             not a PNG or JPEG image: replace or remove it",
            path.display()
        )
    );
}

#[cfg(unix)]
#[test]
fn links_back_to_a_folder_do_not_make_the_walk_endless() {
    let dir = tempfile::tempdir().expect("temp dir");
    for class in ["cat", "dog"] {
        let folder = dir.path().join(class);
        std::fs::create_dir(&folder).expect("dir");
        image::RgbImage::new(2, 2)
            .save(folder.join("0.png"))
            .expect("png");
    }
    // Two links to the folder itself: followed blindly, 2^n paths at depth n.
    for link in ["a", "b"] {
        std::os::unix::fs::symlink(".", dir.path().join("cat").join(link)).expect("link");
    }
    let dataset = image_folder(dir.path()).expect("loads");
    assert_eq!(dataset.len(), 2);
    assert_eq!(dataset.class_counts(), [1, 1]);
}

/// A 1x1 grey PNG whose header claims `side`x`side` pixels (its CRC fixed), padded with zeros
/// after its end to `len` bytes so that its size could hold them: only a decoder would notice.
fn png_claiming(side: u32, len: u64) -> Vec<u8> {
    let mut png = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    png[16..20].copy_from_slice(&side.to_be_bytes());
    png[20..24].copy_from_slice(&side.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png.resize(len as usize, 0);
    png
}

/// `count` copies of [`png_claiming`] in `root/<split>/bomb/`, written as sparse files.
fn bombs(root: &Path, split: &str, count: usize) -> PathBuf {
    let class = root.join(split).join("bomb");
    std::fs::create_dir_all(&class).expect("dir");
    let head = png_claiming(20_000, 64);
    for i in 0..count {
        sparse(&class.join(format!("{i:02}.png")), &head, 1_300_000);
    }
    class
}

#[test]
fn images_larger_than_the_model_input_are_refused_from_their_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let class = bombs(dir.path(), "train", 16);
    bombs(dir.path(), "test", 1);
    let started = std::time::Instant::now();
    let error =
        image_folder_splits_for(dir.path(), ImageShape::new(3, 32, 32)).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: image is 20000x20000 (width x height) but the model input is 3x32x32; images \
             larger than the model input are not cropped or resized for training: resize them \
             beforehand (e.g. ImageMagick `mogrify -resize 32x32! FILE`) or give the model a \
             20000x20000 input",
            class.join("00.png").display()
        )
    );
    // Refused from the header: decoding the padding would fail, and take far longer.
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
}

#[test]
fn image_folders_whose_pixels_exceed_the_limit_in_total_are_refused_before_decoding() {
    let dir = tempfile::tempdir().expect("temp dir");
    bombs(dir.path(), "train", 16);
    // Each 20000x20000 grey image (400 MB) is within the decoder's limit for one image.
    let error = image_folder(&dir.path().join("train")).expect_err("refused");
    let bytes = 16u64 * 20_000 * 20_000;
    assert_eq!(
        error.to_string(),
        format!(
            "{}: 16 images of 20000x20000 pixels with 1 channel(s) need {bytes} bytes in memory, \
             more than the limit of {MAX_DATA_BYTES} (4 GiB) for one dataset; use fewer or \
             smaller images",
            dir.path().join("train").display()
        )
    );
}

#[cfg(unix)]
#[test]
fn links_that_would_label_images_twice_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for class in ["cat", "dog"] {
        let folder = dir.path().join(class);
        std::fs::create_dir(&folder).expect("dir");
        image::RgbImage::new(2, 2)
            .save(folder.join("0.png"))
            .expect("png");
    }
    let refused = |link: &Path| {
        let error = image_folder(dir.path()).expect_err("refused");
        std::fs::remove_file(link).expect("link removed");
        assert!(
            matches!(&error, DataError::Folder { path, .. } if path == link),
            "{error}"
        );
        error.to_string()
    };

    // A link to the parent: every class below it would be labelled `cat` too.
    let up = dir.path().join("cat/up");
    std::os::unix::fs::symlink("..", &up).expect("link");
    let text = refused(&up);
    assert!(
        text.contains("which holds the class folders themselves")
            && text.contains("labelled `cat`"),
        "{text}"
    );

    // A link to another class's folder, from inside a class or as a class of its own.
    let dogs = dir.path().join("cat/dogs");
    std::os::unix::fs::symlink("../dog", &dogs).expect("link");
    let text = refused(&dogs);
    assert_eq!(
        text,
        format!(
            "{}: is the same as {} (through a link): its images would be labelled both `cat` and \
             `dog`; remove the link",
            dogs.display(),
            dir.path().join("dog").display()
        )
    );
    let puppy = dir.path().join("puppy");
    std::os::unix::fs::symlink("dog", &puppy).expect("link");
    let text = refused(&puppy);
    assert!(
        text.contains(&format!(
            "is the same as {}",
            dir.path().join("dog").display()
        )),
        "{text}"
    );

    // A link to another class's image.
    let stolen = dir.path().join("cat/1.png");
    std::os::unix::fs::symlink("../dog/0.png", &stolen).expect("link");
    let text = refused(&stolen);
    assert!(
        text.contains(&format!(
            "is the same as {}",
            dir.path().join("dog/0.png").display()
        )),
        "{text}"
    );

    // Links that stay inside their class are followed (each real folder once), as before.
    std::os::unix::fs::symlink(".", dir.path().join("cat/again")).expect("link");
    assert_eq!(
        image_folder(dir.path()).expect("loads").class_counts(),
        [1, 1]
    );
}
