//! The flow hash: MurmurHash3 (x86, 32-bit) over 32-bit words, seeded.
//!
//! The kernel hashes each new flow with it to pick a ring slot; the agent uses
//! it to predict that choice and to derive each backend's Maglev permutation.
//! Words are taken as they lie in memory on a little-endian machine (BPF is
//! `bpfel` here), so both sides agree bit for bit.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len_bytes: u32) -> u32 {
    h ^= len_bytes;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3_x86_32 of `N` whole words.
#[inline(always)]
pub const fn hash_words<const N: usize>(seed: u32, words: &[u32; N]) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < N {
        h = mix(h, words[i]);
        i += 1;
    }
    finish(h, (N * 4) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values of MurmurHash3_x86_32 (as published with the algorithm)
    // for little-endian word input.
    #[test]
    fn matches_reference_vectors() {
        assert_eq!(hash_words::<0>(0, &[]), 0);
        assert_eq!(hash_words::<0>(1, &[]), 0x514e_28b7);
        assert_eq!(hash_words::<0>(0xffff_ffff, &[]), 0x81f1_6f39);
        assert_eq!(hash_words(0, &[0xffff_ffff]), 0x7629_3b50);
        // "!Ce\x87" read little-endian
        assert_eq!(hash_words(0, &[0x8765_4321]), 0xf55b_516b);
        assert_eq!(hash_words(0x5082_edee, &[0x8765_4321]), 0x2362_f9de);
        assert_eq!(hash_words(0, &[0]), 0x2362_f9de);
    }
}
