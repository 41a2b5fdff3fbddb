//! Ogg pages (RFC 3533), the container layer: CRC, page parsing and page writing.

/// Header flag: packet continued from the previous page.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header flag: first page of the logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Header flag: last page of the logical stream.
pub const FLAG_EOS: u8 = 0x04;

/// The Ogg CRC-32: polynomial 0x04c11db7, no reflection, zero init, no final xor.
const OGG_CRC_32: crc::Algorithm<u32> = crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
};

/// Slicing-by-16 tables: pages are checked and written at every hop of a live stream.
static CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&OGG_CRC_32);

/// The Ogg CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    CRC.checksum(data)
}

/// One parsed page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// Byte offset of the page in the buffer it was parsed from.
    pub offset: usize,
    /// Total page length (header + segment table + body).
    pub len: usize,
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
    /// Number of packets that end on this page.
    pub packets_ending: usize,
}

/// Parses and CRC-checks the page at `offset`; `None` if it is not a valid page.
pub fn parse_page(data: &[u8], offset: usize) -> Option<PageInfo> {
    page_at(data, offset, true)
}

/// Parses the page at `offset`, checking its CRC when `check`.
fn page_at(data: &[u8], offset: usize, check: bool) -> Option<PageInfo> {
    let table_at = offset.checked_add(27)?;
    let h = data.get(offset..table_at)?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return None;
    }
    let nseg = usize::from(h[26]);
    let table = data.get(table_at..table_at.checked_add(nseg)?)?;
    // At most 255 × 255 bytes: no overflow.
    let body: usize = table.iter().map(|&s| usize::from(s)).sum();
    let len = 27 + nseg + body;
    let page = data.get(offset..offset.checked_add(len)?)?;
    let stored = u32::from_le_bytes(page[22..26].try_into().ok()?);
    // The CRC covers the page with its CRC field zeroed.
    if check {
        let mut digest = CRC.digest();
        digest.update(&page[..22]);
        digest.update(&[0; 4]);
        digest.update(&page[26..]);
        if digest.finalize() != stored {
            return None;
        }
    }
    Some(PageInfo {
        offset,
        len,
        flags: h[5],
        granule: u64::from_le_bytes(h[6..14].try_into().ok()?),
        serial: u32::from_le_bytes(h[14..18].try_into().ok()?),
        sequence: u32::from_le_bytes(h[18..22].try_into().ok()?),
        packets_ending: table.iter().filter(|&&s| s < 255).count(),
    })
}

/// Parses every page of a buffer; `None` if any byte is not part of a valid page.
pub fn parse_pages(data: &[u8]) -> Option<Vec<PageInfo>> {
    pages_of(data, true)
}

/// [`parse_pages`] without the CRC check, for pages this crate just wrote (the live muxer's
/// output is cut into pages after every packet).
pub fn split_pages(data: &[u8]) -> Option<Vec<PageInfo>> {
    pages_of(data, false)
}

fn pages_of(data: &[u8], check: bool) -> Option<Vec<PageInfo>> {
    let mut pages = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let page = page_at(data, offset, check)?;
        offset = offset.checked_add(page.len)?;
        pages.push(page);
    }
    Some(pages)
}

/// Packet bodies of one page, split by its lacing values (packets continued across pages are
/// not reassembled: the muxer never writes them).
pub fn page_packets(data: &[u8], page: &PageInfo) -> Vec<std::ops::Range<usize>> {
    let Some(&nseg) = data.get(page.offset + 26) else {
        return Vec::new();
    };
    let nseg = usize::from(nseg);
    let Some(table_at) = page.offset.checked_add(27) else {
        return Vec::new();
    };
    let Some(body_at) = table_at.checked_add(nseg) else {
        return Vec::new();
    };
    let Some(table) = data.get(table_at..body_at) else {
        return Vec::new();
    };
    let mut start = body_at;
    let mut end = start;
    let mut out = Vec::new();
    for &lace in table {
        end = end.saturating_add(usize::from(lace));
        if end > data.len() {
            break;
        }
        if lace < 255 {
            out.push(start..end);
            start = end;
        }
    }
    out
}

/// Writes one page holding whole packets.
pub(crate) fn write_page(
    out: &mut Vec<u8>,
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    packets: &[&[u8]],
) {
    let start = out.len();
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let nseg_at = out.len();
    out.push(0);
    let mut nseg = 0u8;
    for p in packets {
        for _ in 0..p.len() / 255 {
            out.push(255);
        }
        out.push((p.len() % 255) as u8);
        nseg += (p.len() / 255 + 1) as u8;
    }
    out[nseg_at] = nseg;
    for p in packets {
        out.extend_from_slice(p);
    }
    let crc = crc32(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut out = Vec::new();
        write_page(&mut out, FLAG_BOS, 42, 7, 0, &[b"hello", &[9u8; 300]]);
        out
    }

    #[test]
    fn written_page_parses_with_its_fields() {
        let data = page();
        let p = parse_page(&data, 0).expect("valid page");
        assert_eq!(
            (p.len, p.flags, p.granule, p.serial, p.sequence),
            (data.len(), FLAG_BOS, 42, 7, 0)
        );
        assert_eq!(p.packets_ending, 2);
        let packets = page_packets(&data, &p);
        assert_eq!(&data[packets[0].clone()], b"hello");
        assert_eq!(packets[1].len(), 300);
    }

    #[test]
    fn any_flipped_byte_fails_the_crc() {
        let data = page();
        for i in [5, 10, 22, 27, data.len() - 1] {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            assert!(parse_page(&bad, 0).is_none(), "byte {i}");
        }
    }

    #[test]
    fn split_pages_trusts_the_crc_but_not_the_structure() {
        let mut data = page();
        data.extend(page());
        data[30] ^= 0x10;
        assert!(parse_pages(&data).is_none(), "the CRC is checked");
        let pages = split_pages(&data).expect("split without the CRC");
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[1].offset, pages[0].len);
        assert!(split_pages(&data[..data.len() - 1]).is_none(), "a cut page");
    }

    #[test]
    fn crc_is_ogg_s_bit_by_bit() {
        // The polynomial applied bit by bit, MSB first, zero init, no final xor (RFC 3533).
        fn slow(data: &[u8]) -> u32 {
            let mut crc = 0u32;
            for &b in data {
                crc ^= u32::from(b) << 24;
                for _ in 0..8 {
                    crc = if crc & 0x8000_0000 != 0 {
                        (crc << 1) ^ 0x04c1_1db7
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 15, 16, 17, 255, 4999, 5000] {
            assert_eq!(crc32(&data[..len]), slow(&data[..len]), "{len} bytes");
        }
    }
}
