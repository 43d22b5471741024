//! Edge-case vectors for the ZIP-215 verification rule, checking that single and batch
//! verification agree, plus tests of key strength checks, domain separation, the key file format
//! and public key encoding.
//!
//! Everything here is deterministic: keys come from fixed seeds, scalars from fixed bytes, and the
//! property test runs from a fixed proptest seed.

use bft_crypto::{
    BatchVerifier, DOMAIN_HEADER_LEN, KeyFileError, KeyPair, PROTOCOL_TAG, PublicKey, Signature,
    SignatureDomain, SignatureError, WeakKeyError, verify, verify_raw,
};
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use sha2::{Digest as _, Sha512};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Curve helpers
// ---------------------------------------------------------------------------------------------

/// The group order l = 2^252 + 27742317777372353535851937790883648493, little-endian.
const L_BYTES: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The field prime p = 2^255 - 19, little-endian.
const P_BYTES: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The canonical encoding of the identity point (x = 0, y = 1).
const IDENTITY: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
};

/// Adds two 256-bit little-endian integers, panicking on overflow.
fn add_le(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "256-bit overflow");
    out
}

/// A 32-byte little-endian integer with value `v`.
fn small(v: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = v;
    b
}

fn encode(point: &EdwardsPoint) -> [u8; 32] {
    point.compress().to_bytes()
}

fn decompress(bytes: [u8; 32]) -> Option<EdwardsPoint> {
    CompressedEdwardsY(bytes).decompress()
}

/// The canonical encodings of the eight small-order points.
fn torsion_encodings() -> [[u8; 32]; 8] {
    EIGHT_TORSION.map(|t| encode(&t))
}

/// A scalar derived deterministically from a label.
fn scalar(label: &str) -> Scalar {
    let wide: [u8; 64] = Sha512::digest(label.as_bytes()).into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The ed25519 challenge k = SHA-512(R || A || M) mod l, over the encodings exactly as given.
fn challenge(r_bytes: &[u8; 32], a_bytes: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(a_bytes);
    hasher.update(msg);
    let wide: [u8; 64] = hasher.finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn sig_bytes(r: [u8; 32], s: [u8; 32]) -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(&s);
    sig
}

fn split_sig(sig: [u8; 64]) -> ([u8; 32], [u8; 32]) {
    (sig[..32].try_into().unwrap(), sig[32..].try_into().unwrap())
}

/// Signs by hand: `a_bytes` must decode to `[a]B + T` and `r_bytes` to `[r]B + T'` for torsion
/// points `T`, `T'`; then `s = r + k a` satisfies the cofactored equation.
fn manual_sign(a: Scalar, a_bytes: [u8; 32], r: Scalar, r_bytes: [u8; 32], msg: &[u8]) -> [u8; 64] {
    let k = challenge(&r_bytes, &a_bytes, msg);
    sig_bytes(r_bytes, (r + k * a).to_bytes())
}

/// The cofactorless RFC 8032 equation `[s]B = R + [k]A` (what ZIP-215 does NOT use).
fn cofactorless_holds(key: [u8; 32], msg: &[u8], sig: [u8; 64]) -> bool {
    let (r_bytes, s_bytes) = split_sig(sig);
    let (Some(a), Some(r)) = (decompress(key), decompress(r_bytes)) else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    EdwardsPoint::mul_base(&s) == r + challenge(&r_bytes, &key, msg) * a
}

/// Non-canonical encodings that still decompress: `y + p` for every valid `y < 19` (both sign
/// bits), and `x = 0` points (identity, order-2 point) with the sign bit set.
fn non_canonical_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for y in 0u8..19 {
        let y_plus_p = add_le(P_BYTES, small(y));
        assert_eq!(y_plus_p[31] & 0x80, 0, "y + p must fit in 255 bits");
        for sign in [0u8, 0x80] {
            let mut bytes = y_plus_p;
            bytes[31] |= sign;
            if decompress(bytes).is_some() {
                out.push(bytes);
            }
        }
    }
    for t in torsion_encodings() {
        let mut flipped = t;
        flipped[31] ^= 0x80;
        if let Some(point) = decompress(flipped)
            && encode(&point) != flipped
        {
            out.push(flipped);
        }
    }
    for bytes in &out {
        let point = decompress(*bytes).expect("decompresses");
        assert_ne!(
            &encode(&point),
            bytes,
            "{} is canonical",
            hex::encode(bytes)
        );
    }
    out
}

/// Byte strings that are not the encoding of any curve point.
fn non_points() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for y in 2u8..=255 {
        let bytes = small(y);
        if decompress(bytes).is_none() {
            out.push(bytes);
            let mut negative = bytes;
            negative[31] |= 0x80;
            out.push(negative);
        }
        if out.len() >= 6 {
            break;
        }
    }
    // y >= p whose reduction is not a valid y.
    for y in 0u8..19 {
        let bytes = add_le(P_BYTES, small(y));
        if decompress(bytes).is_none() {
            out.push(bytes);
            break;
        }
    }
    assert!(out.len() >= 7);
    for bytes in &out {
        assert!(decompress(*bytes).is_none());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Vector {
    name: String,
    key: [u8; 32],
    msg: Vec<u8>,
    sig: [u8; 64],
    /// The outcome ZIP-215 prescribes, where the construction makes it known.
    expected: Option<bool>,
}

fn vector(
    name: impl Into<String>,
    key: [u8; 32],
    msg: &[u8],
    sig: [u8; 64],
    expected: Option<bool>,
) -> Vector {
    Vector {
        name: name.into(),
        key,
        msg: msg.to_vec(),
        sig,
        expected,
    }
}

/// RFC 8032 section 7.1, tests 1 and 2: (seed, public key, message, signature).
const RFC8032: [(&str, &str, &str, &str); 2] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
];

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hex64(s: &str) -> [u8; 64] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn edge_vectors() -> Vec<Vector> {
    let mut v = Vec::new();
    let kp = KeyPair::from_seed([7; 32]);
    let key = kp.public().to_bytes();
    let msg: &[u8] = b"edge-case message";
    let good = kp.sign_raw(msg).to_bytes();
    let (good_r, good_s) = split_sig(good);
    let torsion = torsion_encodings();
    let zero = [0u8; 32];

    // Normal signatures.
    v.push(vector("valid", key, msg, good, Some(true)));
    for (i, (_, pk, m, sig)) in RFC8032.iter().enumerate() {
        v.push(vector(
            format!("rfc8032 test {}", i + 1),
            hex32(pk),
            &hex::decode(m).unwrap(),
            hex64(sig),
            Some(true),
        ));
    }

    // Single-bit corruptions.
    for bit in [0usize, 100, 254, 255] {
        let mut sig = good;
        sig[bit / 8] ^= 1 << (bit % 8);
        v.push(vector(
            format!("R bit {bit} flipped"),
            key,
            msg,
            sig,
            Some(false),
        ));
    }
    for bit in [0usize, 100, 252, 255] {
        let mut sig = good;
        sig[32 + bit / 8] ^= 1 << (bit % 8);
        v.push(vector(
            format!("s bit {bit} flipped"),
            key,
            msg,
            sig,
            Some(false),
        ));
    }
    for bit in [0usize, msg.len() * 8 - 1] {
        let mut m = msg.to_vec();
        m[bit / 8] ^= 1 << (bit % 8);
        v.push(vector(
            format!("message bit {bit} flipped"),
            key,
            &m,
            good,
            Some(false),
        ));
    }
    let mut flipped_key = key;
    flipped_key[0] ^= 1;
    v.push(vector(
        "key bit 0 flipped",
        flipped_key,
        msg,
        good,
        Some(false),
    ));

    // Non-canonical scalars: the equation holds modulo l, but s >= l must be rejected.
    let s_plus_l = add_le(good_s, L_BYTES);
    v.push(vector(
        "s + l",
        key,
        msg,
        sig_bytes(good_r, s_plus_l),
        Some(false),
    ));
    v.push(vector(
        "s + 2l",
        key,
        msg,
        sig_bytes(good_r, add_le(s_plus_l, L_BYTES)),
        Some(false),
    ));
    v.push(vector(
        "identity A, identity R, s = l",
        IDENTITY,
        msg,
        sig_bytes(IDENTITY, L_BYTES),
        Some(false),
    ));

    // Identity key with R = identity and s = 0: the cofactored equation is 0 = 0 for any message.
    for m in [&b""[..], b"a", msg, &[0xff; 200][..]] {
        v.push(vector(
            format!("identity A/R, s = 0, {}-byte message", m.len()),
            IDENTITY,
            m,
            sig_bytes(IDENTITY, zero),
            Some(true),
        ));
    }
    // ... but not with s = 1 ([8]B is not the identity).
    v.push(vector(
        "identity A/R, s = 1",
        IDENTITY,
        msg,
        sig_bytes(IDENTITY, small(1)),
        Some(false),
    ));

    // Small-order A and R with s = 0: [8]R = [8][k]A = 0, accepted.
    for (i, a) in torsion.iter().enumerate() {
        for (j, r) in torsion.iter().enumerate() {
            v.push(vector(
                format!("torsion A[{i}], torsion R[{j}], s = 0"),
                *a,
                msg,
                sig_bytes(*r, zero),
                Some(true),
            ));
        }
    }
    // Small-order key: a "signature" R = [s]B is accepted for any message, and s = 1 with
    // R = identity is not.
    for (i, a) in torsion.iter().enumerate() {
        let s = scalar(&format!("forgery {i}"));
        let r = encode(&EdwardsPoint::mul_base(&s));
        v.push(vector(
            format!("torsion A[{i}], R = [s]B (forgery)"),
            *a,
            msg,
            sig_bytes(r, s.to_bytes()),
            Some(true),
        ));
        v.push(vector(
            format!("torsion A[{i}], identity R, s = 1"),
            *a,
            msg,
            sig_bytes(IDENTITY, small(1)),
            Some(false),
        ));
    }
    // A valid key with small-order R and s = 0 does not verify ([8][k]A != 0).
    v.push(vector(
        "valid A, torsion R[1], s = 0",
        key,
        msg,
        sig_bytes(torsion[1], zero),
        Some(false),
    ));

    // Non-canonical point encodings, as A and as R. ZIP-215 decodes them (y mod p); the outcome
    // then depends only on the point: small order -> accepted with s = 0, large order -> not.
    let a = scalar("manual key");
    let a_point = EdwardsPoint::mul_base(&a);
    let a_bytes = encode(&a_point);
    for nc in non_canonical_encodings() {
        let point = decompress(nc).unwrap();
        let small_order = point.is_small_order();
        let name = hex::encode(nc);
        v.push(vector(
            format!("non-canonical A {name}, identity R, s = 0"),
            nc,
            msg,
            sig_bytes(IDENTITY, zero),
            Some(small_order),
        ));
        v.push(vector(
            format!("identity A, non-canonical R {name}, s = 0"),
            IDENTITY,
            msg,
            sig_bytes(nc, zero),
            Some(small_order),
        ));
        v.push(vector(
            format!("non-canonical A {name}, non-canonical R, s = 0"),
            nc,
            msg,
            sig_bytes(nc, zero),
            Some(small_order),
        ));
        if small_order {
            // Known discrete log (0 plus torsion): real signatures.
            let r = scalar(&format!("nonce for {name}"));
            let r_bytes = encode(&EdwardsPoint::mul_base(&r));
            v.push(vector(
                format!("non-canonical small-order A {name}, R = [r]B, s = r"),
                nc,
                msg,
                manual_sign(Scalar::ZERO, nc, r, r_bytes, msg),
                Some(true),
            ));
            v.push(vector(
                format!("valid A, non-canonical small-order R {name}, s = k a"),
                a_bytes,
                msg,
                manual_sign(a, a_bytes, Scalar::ZERO, nc, msg),
                Some(true),
            ));
        }
    }

    // Bytes that are not a point at all, as A and as R.
    for np in non_points() {
        let name = hex::encode(np);
        v.push(vector(
            format!("not-a-point A {name}, valid signature"),
            np,
            msg,
            good,
            Some(false),
        ));
        v.push(vector(
            format!("not-a-point A {name}, identity R, s = 0"),
            np,
            msg,
            sig_bytes(IDENTITY, zero),
            Some(false),
        ));
        v.push(vector(
            format!("valid A, not-a-point R {name}"),
            key,
            msg,
            sig_bytes(np, good_s),
            Some(false),
        ));
        v.push(vector(
            format!("identity A, not-a-point R {name}, s = 0"),
            IDENTITY,
            msg,
            sig_bytes(np, zero),
            Some(false),
        ));
    }

    // Hand-made signatures: prime-order (sanity check of the hand signer), then mixed-order A
    // and/or R (a large-order point plus a torsion point) with s = r + k a computed by hand.
    let r = scalar("manual nonce");
    let r_point = EdwardsPoint::mul_base(&r);
    v.push(vector(
        "manual: prime-order A and R",
        a_bytes,
        msg,
        manual_sign(a, a_bytes, r, encode(&r_point), msg),
        Some(true),
    ));
    for (i, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
        let mixed_a = encode(&(a_point + t));
        let mixed_r = encode(&(r_point + t));
        let sig = manual_sign(a, mixed_a, r, encode(&r_point), msg);
        v.push(vector(
            format!("mixed-order A (+T[{i}])"),
            mixed_a,
            msg,
            sig,
            Some(true),
        ));
        let mut other = msg.to_vec();
        other.push(b'!');
        v.push(vector(
            format!("mixed-order A (+T[{i}]), other message"),
            mixed_a,
            &other,
            sig,
            Some(false),
        ));
        v.push(vector(
            format!("mixed-order R (+T[{i}])"),
            a_bytes,
            msg,
            manual_sign(a, a_bytes, r, mixed_r, msg),
            Some(true),
        ));
        let mixed_r2 = encode(&(r_point + EIGHT_TORSION[(i + 3) % 8]));
        v.push(vector(
            format!("mixed-order A (+T[{i}]) and R"),
            mixed_a,
            msg,
            manual_sign(a, mixed_a, r, mixed_r2, msg),
            Some(true),
        ));
    }
    // The real key pair's key with a torsion point added, signing with its secret scalar.
    let (seed_scalar, _) = expand_seed([7; 32]);
    let real_point = decompress(key).unwrap();
    let mixed_real = encode(&(real_point + EIGHT_TORSION[1]));
    v.push(vector(
        "mixed-order key from a KeyPair seed",
        mixed_real,
        msg,
        manual_sign(seed_scalar, mixed_real, r, encode(&r_point), msg),
        Some(true),
    ));

    v
}

/// RFC 8032 key expansion: the secret scalar and the nonce prefix of a seed.
fn expand_seed(seed: [u8; 32]) -> (Scalar, [u8; 32]) {
    let h: [u8; 64] = Sha512::digest(seed).into();
    let mut lower: [u8; 32] = h[..32].try_into().unwrap();
    lower[0] &= 248;
    lower[31] &= 127;
    lower[31] |= 64;
    (
        Scalar::from_bytes_mod_order(lower),
        h[32..].try_into().unwrap(),
    )
}

fn single(v: &Vector) -> Result<(), SignatureError> {
    verify_raw(&PublicKey(v.key), &v.msg, &Signature(v.sig))
}

fn batch_of<'a>(vectors: impl IntoIterator<Item = &'a Vector>) -> BatchVerifier {
    let mut batch = BatchVerifier::new();
    for v in vectors {
        batch.queue(PublicKey(v.key), v.msg.clone(), Signature(v.sig));
    }
    batch
}

/// Three valid signatures by distinct keys (one of them the key most vectors use).
fn valid_fillers() -> Vec<Vector> {
    [[7u8; 32], [8; 32], [9; 32]]
        .iter()
        .enumerate()
        .map(|(i, seed)| {
            let kp = KeyPair::from_seed(*seed);
            let msg = format!("filler {i}").into_bytes();
            vector(
                format!("filler {i}"),
                kp.public().to_bytes(),
                &msg,
                kp.sign_raw(&msg).to_bytes(),
                Some(true),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Single and batch verification agree
// ---------------------------------------------------------------------------------------------

/// The curve constants used to build the vectors are right (l, p, identity, torsion).
#[test]
fn curve_constants_are_right() {
    assert_eq!(Scalar::from_bytes_mod_order(L_BYTES), Scalar::ZERO);
    assert!(bool::from(Scalar::from_canonical_bytes(L_BYTES).is_none()));
    let mut l_minus_1 = L_BYTES;
    l_minus_1[0] -= 1;
    assert_eq!(
        Scalar::from_canonical_bytes(l_minus_1).unwrap(),
        -Scalar::ONE
    );
    // y = p + 1 is a non-canonical encoding of the identity.
    assert_eq!(
        decompress(add_le(P_BYTES, small(1))),
        Some(EdwardsPoint::default())
    );
    assert_eq!(torsion_encodings()[0], IDENTITY);
    for t in EIGHT_TORSION {
        assert!(t.is_small_order());
        assert!(t.mul_by_cofactor() == EdwardsPoint::default());
    }
    assert_eq!(
        encode(&ED25519_BASEPOINT_POINT),
        encode(&EdwardsPoint::mul_base(&Scalar::ONE))
    );
}

/// KeyPair matches the RFC 8032 known answers, and the hand signer matches `sign_raw` exactly.
#[test]
fn rfc8032_known_answers_and_hand_signer() {
    for (seed, pk, msg, sig) in RFC8032 {
        let kp = KeyPair::from_seed(hex32(seed));
        let msg = hex::decode(msg).unwrap();
        assert_eq!(kp.public().to_bytes(), hex32(pk));
        assert_eq!(kp.sign_raw(&msg).to_bytes(), hex64(sig));
    }
    for seed in [[1u8; 32], [7; 32], [0xaa; 32]] {
        let kp = KeyPair::from_seed(seed);
        let (a, prefix) = expand_seed(seed);
        let a_bytes = encode(&EdwardsPoint::mul_base(&a));
        assert_eq!(a_bytes, kp.public().to_bytes());
        for msg in [&b""[..], b"hello", &[0x5a; 300][..]] {
            let mut hasher = Sha512::new();
            hasher.update(prefix);
            hasher.update(msg);
            let wide: [u8; 64] = hasher.finalize().into();
            let r = Scalar::from_bytes_mod_order_wide(&wide);
            let r_bytes = encode(&EdwardsPoint::mul_base(&r));
            assert_eq!(
                manual_sign(a, a_bytes, r, r_bytes, msg),
                kp.sign_raw(msg).to_bytes()
            );
        }
    }
}

/// On every edge vector single and batch verification agree, with the ZIP-215 outcome if known.
#[test]
fn single_and_batch_agree_on_edge_vectors() {
    // For each vector: `verify_raw` accepts iff a one-item batch accepts; inside a batch with
    // three valid signatures, `verify_each` equals the per-item single results.
    let vectors = edge_vectors();
    let fillers = valid_fillers();
    let (mut accepted, mut rejected) = (0, 0);
    for (n, v) in vectors.iter().enumerate() {
        let result = single(v);
        if let Some(expected) = v.expected {
            assert_eq!(
                result.is_ok(),
                expected,
                "{}: single verification gave {result:?}",
                v.name
            );
        }
        if result.is_ok() {
            accepted += 1;
        } else {
            rejected += 1;
        }

        let alone = batch_of([v]);
        assert_eq!(
            alone.verify().is_ok(),
            result.is_ok(),
            "{}: one-item batch disagrees",
            v.name
        );
        assert_eq!(
            alone.verify_each(),
            vec![result],
            "{}: one-item verify_each",
            v.name
        );

        // The vector at each position among three valid signatures.
        let position = n % 4;
        let mut mixed: Vec<&Vector> = fillers.iter().collect();
        mixed.insert(position, v);
        let batch = batch_of(mixed.iter().copied());
        let expected_each: Vec<_> = mixed.iter().map(|item| single(item)).collect();
        assert_eq!(
            expected_each.iter().filter(|r| r.is_err()).count(),
            usize::from(result.is_err())
        );
        assert_eq!(
            batch.verify_each(),
            expected_each,
            "{}: mixed-batch verify_each",
            v.name
        );
        assert_eq!(
            batch.verify().is_ok(),
            result.is_ok(),
            "{}: mixed-batch verify",
            v.name
        );
    }
    // The list exercises both outcomes in quantity.
    assert!(
        accepted >= 80 && rejected >= 30,
        "accepted {accepted}, rejected {rejected}"
    );
}

/// A batch of all edge vectors reports the single results; one of the accepted ones verifies.
#[test]
fn one_batch_of_all_edge_vectors_matches_single_results() {
    let vectors = edge_vectors();
    let singles: Vec<_> = vectors.iter().map(single).collect();
    let batch = batch_of(&vectors);
    assert_eq!(batch.len(), vectors.len());
    assert!(batch.verify().is_err());
    assert_eq!(batch.verify_each(), singles);

    let accepted: Vec<Vector> = vectors
        .iter()
        .filter(|v| single(v).is_ok())
        .cloned()
        .collect();
    let batch = batch_of(&accepted);
    assert!(batch.verify().is_ok());
    assert!(batch.verify_each().iter().all(Result::is_ok));
}

/// Keys that are not points are rejected as `MalformedPublicKey`, other failures as `Invalid`.
#[test]
fn rejection_reasons() {
    for v in edge_vectors() {
        let result = single(&v);
        if decompress(v.key).is_none() {
            assert_eq!(
                result,
                Err(SignatureError::MalformedPublicKey),
                "{}",
                v.name
            );
        } else if result.is_err() {
            assert_eq!(result, Err(SignatureError::Invalid), "{}", v.name);
        }
    }
}

/// Mixed-order signatures are accepted although most fail the cofactorless RFC 8032 equation.
#[test]
fn mixed_order_vectors_need_the_cofactored_equation() {
    // This shows that the vectors really exercise the ZIP-215 choice of equation.
    let mixed: Vec<Vector> = edge_vectors()
        .into_iter()
        .filter(|v| v.name.starts_with("mixed-order") && v.expected == Some(true))
        .collect();
    assert!(mixed.len() >= 15);
    let mut cofactorless_rejects = 0;
    for v in &mixed {
        assert_eq!(single(v), Ok(()), "{}", v.name);
        if !cofactorless_holds(v.key, &v.msg, v.sig) {
            cofactorless_rejects += 1;
        }
    }
    assert!(
        cofactorless_rejects >= mixed.len() / 2,
        "only {cofactorless_rejects} need the cofactor"
    );
    // Sanity check of the cofactorless helper on an ordinary signature.
    let kp = KeyPair::from_seed([3; 32]);
    assert!(cofactorless_holds(
        kp.public().to_bytes(),
        b"m",
        kp.sign_raw(b"m").to_bytes()
    ));
}

/// The empty batch verifies and has no per-item results.
#[test]
fn empty_batch() {
    let batch: BatchVerifier = BatchVerifier::new();
    assert!(batch.is_empty());
    assert_eq!(batch.verify(), Ok(()));
    assert!(batch.verify_each().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Strong key check
// ---------------------------------------------------------------------------------------------

/// `check_strong` rejects small-order, mixed-order, non-canonical and non-point keys and accepts normal ones.
#[test]
fn check_strong_rejects_weak_keys() {
    for (i, t) in torsion_encodings().iter().enumerate() {
        assert_eq!(
            PublicKey(*t).check_strong(),
            Err(WeakKeyError::SmallOrder),
            "torsion point {i}"
        );
    }
    let non_canonical = non_canonical_encodings();
    assert!(non_canonical.len() >= 6);
    // At least one of them is of large order (so NonCanonical is not just SmallOrder in disguise).
    assert!(
        non_canonical
            .iter()
            .any(|b| !decompress(*b).unwrap().is_small_order())
    );
    for nc in non_canonical {
        assert_eq!(
            PublicKey(nc).check_strong(),
            Err(WeakKeyError::NonCanonical),
            "{}",
            hex::encode(nc)
        );
    }
    for np in non_points() {
        assert_eq!(
            PublicKey(np).check_strong(),
            Err(WeakKeyError::NotAPoint),
            "{}",
            hex::encode(np)
        );
    }
    for seed in 0u8..16 {
        let key = KeyPair::from_seed([seed; 32]).public();
        assert_eq!(key.check_strong(), Ok(()), "seed {seed}");
        // The negated point (sign bit flipped) is also a canonical large-order key.
        let mut negated = key.to_bytes();
        negated[31] ^= 0x80;
        assert_eq!(PublicKey(negated).check_strong(), Ok(()));
    }
    for (_, pk, _, _) in RFC8032 {
        assert_eq!(PublicKey(hex32(pk)).check_strong(), Ok(()));
    }
    // A real key's point plus a torsion point: canonical, large order, but not prime order.
    let real = decompress(KeyPair::from_seed([3; 32]).public().to_bytes()).unwrap();
    for t in EIGHT_TORSION.iter().skip(1) {
        assert_eq!(
            PublicKey(encode(&(real + t))).check_strong(),
            Err(WeakKeyError::MixedOrder)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Domain separation
// ---------------------------------------------------------------------------------------------

const DOMAIN: SignatureDomain = SignatureDomain {
    cluster: 0x0102_0304_0506_0708,
    kind: 9,
    sender_role: 1,
    sender_id: 0x1112_1314_1516_1718,
};

/// A signature fails if any of cluster, kind, sender_role, sender_id or the payload changes.
#[test]
fn domain_fields_and_payload_are_bound() {
    let kp = KeyPair::from_seed([42; 32]);
    let key = kp.public();
    let payload = b"prepare view 3 seq 17";
    let sig = kp.sign(&DOMAIN, payload);
    assert_eq!(verify(&key, &DOMAIN, payload, &sig), Ok(()));
    assert_eq!(
        verify_raw(&key, &DOMAIN.signed_bytes(payload), &sig),
        Ok(())
    );

    let variants = [
        SignatureDomain {
            cluster: DOMAIN.cluster + 1,
            ..DOMAIN
        },
        SignatureDomain {
            cluster: 0,
            ..DOMAIN
        },
        SignatureDomain {
            kind: DOMAIN.kind + 1,
            ..DOMAIN
        },
        SignatureDomain { kind: 0, ..DOMAIN },
        SignatureDomain {
            sender_role: DOMAIN.sender_role + 1,
            ..DOMAIN
        },
        SignatureDomain {
            sender_role: 0,
            ..DOMAIN
        },
        SignatureDomain {
            sender_id: DOMAIN.sender_id + 1,
            ..DOMAIN
        },
        SignatureDomain {
            sender_id: DOMAIN.sender_id ^ (1 << 63),
            ..DOMAIN
        },
    ];
    for other in variants {
        assert_ne!(other, DOMAIN);
        assert_eq!(
            verify(&key, &other, payload, &sig),
            Err(SignatureError::Invalid),
            "{other:?}"
        );
    }
    let mut changed = payload.to_vec();
    changed[0] ^= 1;
    assert_eq!(
        verify(&key, &DOMAIN, &changed, &sig),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        verify(&key, &DOMAIN, &payload[1..], &sig),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        verify(&key, &DOMAIN, b"", &sig),
        Err(SignatureError::Invalid)
    );
    // Another key never verifies it either.
    let other_key = KeyPair::from_seed([43; 32]).public();
    assert_eq!(
        verify(&other_key, &DOMAIN, payload, &sig),
        Err(SignatureError::Invalid)
    );
    // Nor does the bare payload (no header), in either direction.
    assert_eq!(
        verify_raw(&key, payload, &sig),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        verify(&key, &DOMAIN, payload, &kp.sign_raw(payload)),
        Err(SignatureError::Invalid)
    );
}

/// Parses the header layout documented on `SignatureDomain`.
fn parse_header(bytes: &[u8]) -> SignatureDomain {
    assert_eq!(bytes.len(), DOMAIN_HEADER_LEN);
    assert_eq!(bytes[..16], PROTOCOL_TAG);
    SignatureDomain {
        cluster: u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        kind: bytes[24],
        sender_role: bytes[25],
        sender_id: u64::from_le_bytes(bytes[26..34].try_into().unwrap()),
    }
}

/// Moving bytes between the fixed-length domain header and the payload never verifies.
#[test]
fn header_payload_boundary_cannot_move() {
    // Why: the header is always exactly DOMAIN_HEADER_LEN bytes (a fixed tag and fixed-width
    // fields, no variable-length parts), so the signed bytes split in exactly one place and
    // determine both the domain and the payload. Shifting the boundary changes the signed bytes.
    assert_eq!(DOMAIN_HEADER_LEN, 34);
    let kp = KeyPair::from_seed([44; 32]);
    let key = kp.public();
    let payload = b"\x19\x1a-payload".to_vec();
    let signed = DOMAIN.signed_bytes(&payload);
    let sig = kp.sign(&DOMAIN, &payload);

    // The encoding is injective: the first DOMAIN_HEADER_LEN bytes are the header, the rest is
    // the payload, for every domain and payload length.
    for (domain, payload) in [
        (DOMAIN, &payload[..]),
        (SignatureDomain { kind: 0, ..DOMAIN }, b""),
        (DOMAIN, &[0u8; 1000][..]),
    ] {
        let bytes = domain.signed_bytes(payload);
        assert_eq!(bytes.len(), DOMAIN_HEADER_LEN + payload.len());
        assert_eq!(parse_header(&bytes[..DOMAIN_HEADER_LEN]), domain);
        assert_eq!(&bytes[DOMAIN_HEADER_LEN..], payload);
        let mut header = Vec::new();
        domain.write_header(&mut header);
        assert_eq!(header, bytes[..DOMAIN_HEADER_LEN]);
    }

    // Move the last 1..=8 header bytes (the high bytes of sender_id) into the payload, and zero
    // them in the header: different signed bytes, does not verify.
    for shift in 1..=8usize {
        let mut moved = signed[DOMAIN_HEADER_LEN - shift..DOMAIN_HEADER_LEN].to_vec();
        moved.extend_from_slice(&payload);
        let mask = if shift == 8 {
            0
        } else {
            u64::MAX >> (8 * shift)
        };
        let domain = SignatureDomain {
            sender_id: DOMAIN.sender_id & mask,
            ..DOMAIN
        };
        assert_ne!(domain.signed_bytes(&moved), signed);
        assert_eq!(
            verify(&key, &domain, &moved, &sig),
            Err(SignatureError::Invalid),
            "shift {shift}"
        );
    }
    // Move the first 1..=2 payload bytes into the header: shift the header window right by that
    // much (dropping the leading fields' first bytes) and take what remains as payload.
    for shift in 1..=2usize {
        let window = &signed[shift..DOMAIN_HEADER_LEN + shift];
        let domain = SignatureDomain {
            cluster: u64::from_le_bytes(window[16..24].try_into().unwrap()),
            kind: window[24],
            sender_role: window[25],
            sender_id: u64::from_le_bytes(window[26..34].try_into().unwrap()),
        };
        let rest = &payload[shift..];
        assert_ne!(domain.signed_bytes(rest), signed);
        assert_eq!(
            verify(&key, &domain, rest, &sig),
            Err(SignatureError::Invalid),
            "shift {shift}"
        );
    }
    // Whatever domain is claimed, the only payload that reproduces the signed bytes is the
    // original one, and then only with the original domain.
    let reparsed = parse_header(&signed[..DOMAIN_HEADER_LEN]);
    assert_eq!(reparsed, DOMAIN);
    assert_eq!(
        verify(&key, &reparsed, &signed[DOMAIN_HEADER_LEN..], &sig),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Key files
// ---------------------------------------------------------------------------------------------

const MAGIC: &str = "bft-rs-ed25519-secret-key-v1";

/// A key file round trip keeps the public key and produces identical signatures.
#[test]
fn key_file_round_trip() {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 3);
    let kp = KeyPair::from_seed(seed);
    let text = kp.to_key_file();
    assert_eq!(text, format!("{MAGIC}\n{}\n", hex::encode(seed)));
    for text in [
        text.clone(),
        text.trim_end().to_string(),
        text.replace('\n', "\r\n"),
    ] {
        let back = KeyPair::from_key_file(&text).unwrap();
        assert_eq!(back.public(), kp.public());
        assert_eq!(back.sign(&DOMAIN, b"payload"), kp.sign(&DOMAIN, b"payload"));
        assert_eq!(back.sign_raw(b""), kp.sign_raw(b""));
        assert_eq!(back.to_key_file(), kp.to_key_file());
    }
    // The Debug output never shows the seed.
    assert!(!format!("{kp:?}").contains(&hex::encode(seed)));
}

/// Malformed key files give their specific `KeyFileError` variant.
#[test]
fn key_file_errors() {
    let seed_hex = hex::encode([5u8; 32]);
    let bad_header = [
        String::new(),
        format!("{seed_hex}\n"),
        format!("bft-rs-ed25519-secret-key-v2\n{seed_hex}\n"),
        format!("{MAGIC} \n{seed_hex}\n"),
        format!("\n{MAGIC}\n{seed_hex}\n"),
    ];
    for text in bad_header {
        assert!(
            matches!(KeyPair::from_key_file(&text), Err(KeyFileError::BadHeader)),
            "{text:?}"
        );
    }
    for text in [MAGIC.to_string(), format!("{MAGIC}\n")] {
        assert!(
            matches!(
                KeyPair::from_key_file(&text),
                Err(KeyFileError::MissingSeed)
            ),
            "{text:?}"
        );
    }
    let bad_seed = [
        format!("{MAGIC}\n{}\n", "zz".repeat(32)),  // not hex
        format!("{MAGIC}\n{}g\n", &seed_hex[..63]), // one bad digit
        format!("{MAGIC}\n{}\n", &seed_hex[..62]),  // 31 bytes
        format!("{MAGIC}\n{}\n", &seed_hex[..63]),  // odd length
        format!("{MAGIC}\n{seed_hex}05\n"),         // 33 bytes
        format!("{MAGIC}\n\n"),                     // empty seed line
        format!("{MAGIC}\n{} {}\n", &seed_hex[..32], &seed_hex[32..]), // space inside
    ];
    for text in bad_seed {
        assert!(
            matches!(KeyPair::from_key_file(&text), Err(KeyFileError::BadSeed)),
            "{text:?}"
        );
    }
    for text in [
        format!("{MAGIC}\n{seed_hex}\nextra\n"),
        format!("{MAGIC}\n{seed_hex}\n\n{seed_hex}"),
        format!("{MAGIC}\n{seed_hex}\n{MAGIC}\n"),
    ] {
        assert!(
            matches!(
                KeyPair::from_key_file(&text),
                Err(KeyFileError::TrailingData)
            ),
            "{text:?}"
        );
    }
}

/// A directory under the system temp dir, removed when dropped (also on panic).
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("bft-crypto-vectors-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `save` then `load` round trips, `save` never overwrites, and the file is owner-only (0600).
#[test]
fn key_file_save_and_load() {
    let dir = TempDir::new("save-load");
    let dir_path = dir.0.clone();
    let path = dir.0.join("replica.key");
    let kp = KeyPair::from_seed([11; 32]);
    kp.save(&path).unwrap();
    let loaded = KeyPair::load(&path).unwrap();
    assert_eq!(loaded.public(), kp.public());
    assert_eq!(loaded.sign(&DOMAIN, b"x"), kp.sign(&DOMAIN, b"x"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), kp.to_key_file());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    // Refuses to overwrite, and leaves the existing key in place.
    let other = KeyPair::from_seed([12; 32]);
    match other.save(&path) {
        Err(KeyFileError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected an AlreadyExists I/O error, got {other:?}"),
    }
    assert_eq!(KeyPair::load(&path).unwrap().public(), kp.public());

    // Loading a missing file or a malformed one reports the right error.
    assert!(matches!(
        KeyPair::load(&dir.0.join("missing.key")),
        Err(KeyFileError::Io { .. })
    ));
    let junk = dir.0.join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    assert!(matches!(KeyPair::load(&junk), Err(KeyFileError::BadHeader)));

    drop(dir);
    assert!(!dir_path.exists());
}

// ---------------------------------------------------------------------------------------------
// 5. Random batches
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Corruption {
    None,
    FlipSigBit(u16),
    FlipMsgBit(u16),
    WrongKey(u8),
    SPlusL,
    /// Replace the triple by a small-order key with R = identity, s = 0 (ZIP-215 accepts it).
    SmallOrderKey(usize),
    NotAPointKey,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        6 => Just(Corruption::None),
        2 => (0u16..512).prop_map(Corruption::FlipSigBit),
        1 => any::<u16>().prop_map(Corruption::FlipMsgBit),
        1 => (1u8..=255).prop_map(Corruption::WrongKey),
        1 => Just(Corruption::SPlusL),
        1 => (0usize..8).prop_map(Corruption::SmallOrderKey),
        1 => Just(Corruption::NotAPointKey),
    ]
}

/// Builds the triple and says whether ZIP-215 accepts it.
fn build_triple(
    seed: [u8; 32],
    mut msg: Vec<u8>,
    corruption: &Corruption,
) -> (PublicKey, Vec<u8>, Signature, bool) {
    let kp = KeyPair::from_seed(seed);
    let mut key = kp.public();
    let mut sig = kp.sign_raw(&msg);
    let valid = match *corruption {
        Corruption::None => true,
        Corruption::FlipSigBit(bit) => {
            sig.0[usize::from(bit / 8)] ^= 1 << (bit % 8);
            false
        }
        Corruption::FlipMsgBit(bit) => {
            if msg.is_empty() {
                msg.push(0);
            } else {
                let bit = usize::from(bit) % (msg.len() * 8);
                msg[bit / 8] ^= 1 << (bit % 8);
            }
            false
        }
        Corruption::WrongKey(delta) => {
            let mut other = seed;
            other[0] ^= delta;
            key = KeyPair::from_seed(other).public();
            false
        }
        Corruption::SPlusL => {
            let (r, s) = split_sig(sig.0);
            sig = Signature(sig_bytes(r, add_le(s, L_BYTES)));
            false
        }
        Corruption::SmallOrderKey(i) => {
            key = PublicKey(torsion_encodings()[i]);
            sig = Signature(sig_bytes(IDENTITY, [0; 32]));
            true
        }
        Corruption::NotAPointKey => {
            key = PublicKey(non_points()[0]);
            false
        }
    };
    (key, msg, sig, valid)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6266_742d_7273),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// On random batches `verify_each` equals per-item `verify_raw`; `verify` is Ok iff all are.
    #[test]
    fn random_batches_agree_with_single_verification(
        items in proptest::collection::vec(
            (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..48), corruption()),
            1..8,
        )
    ) {
        let mut batch = BatchVerifier::new();
        let mut singles = Vec::new();
        for (seed, msg, corruption) in &items {
            let (key, msg, sig, valid) = build_triple(*seed, msg.clone(), corruption);
            let result = verify_raw(&key, &msg, &sig);
            prop_assert_eq!(result.is_ok(), valid, "{:?}", corruption);
            singles.push(result);
            batch.queue(key, msg, sig);
        }
        prop_assert_eq!(batch.len(), items.len());
        prop_assert_eq!(batch.verify_each(), singles.clone());
        prop_assert_eq!(batch.verify().is_ok(), singles.iter().all(Result::is_ok));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Encodings
// ---------------------------------------------------------------------------------------------

/// PublicKey round-trips through hex (Display/FromStr/Deserialize); malformed hex is rejected.
#[test]
fn public_key_hex_round_trip() {
    use serde::Deserialize as _;
    use serde::de::IntoDeserializer;
    use serde::de::value::{BorrowedStrDeserializer, Error as ValueError};

    for seed in [[0u8; 32], [1; 32], [0xfe; 32]] {
        let key = KeyPair::from_seed(seed).public();
        let text = key.to_string();
        assert_eq!(text, hex::encode(key.to_bytes()));
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        let owned = PublicKey::deserialize(IntoDeserializer::<ValueError>::into_deserializer(
            text.as_str(),
        ))
        .unwrap();
        assert_eq!(owned, key);
        let borrowed =
            PublicKey::deserialize(BorrowedStrDeserializer::<ValueError>::new(&text)).unwrap();
        assert_eq!(borrowed, key);
        // Debug shows a short prefix only.
        assert_eq!(format!("{key:?}"), format!("PublicKey({})", &text[..8]));
    }
    // Keys that are not points still round-trip: the encoding does not validate.
    for bytes in [[0xff; 32], non_points()[0]] {
        assert_eq!(
            PublicKey(bytes).to_string().parse::<PublicKey>().unwrap(),
            PublicKey(bytes)
        );
    }
    let good = "ab".repeat(32);
    for bad in [
        String::new(),
        "ab".repeat(31),
        "ab".repeat(33),
        format!("{}zz", &good[..62]),
        good[..63].to_string(),
        format!("{good}a"),
    ] {
        assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        assert!(PublicKey::deserialize(BorrowedStrDeserializer::<ValueError>::new(&bad)).is_err());
    }
}

/// `Signature` deserializes from exactly 64 bytes (a fixed tuple) and rejects other lengths.
#[test]
fn signature_deserializes_from_64_bytes() {
    use serde::Deserialize as _;
    use serde::de::value::{Error as ValueError, SeqDeserializer};

    let sig = KeyPair::from_seed([3; 32]).sign_raw(b"s");
    let bytes = sig.to_bytes();
    let de = SeqDeserializer::<_, ValueError>::new(bytes.iter().copied());
    assert_eq!(Signature::deserialize(de).unwrap(), sig);
    let short = SeqDeserializer::<_, ValueError>::new(bytes[..63].iter().copied());
    assert!(Signature::deserialize(short).is_err());
    let long = SeqDeserializer::<_, ValueError>::new(bytes.iter().copied().chain([0u8]));
    assert!(Signature::deserialize(long).is_err());
}
