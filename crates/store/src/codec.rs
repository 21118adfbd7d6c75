//! The binary form of series and device metadata in the tree: length-prefixed strings and
//! big-endian numbers, with a version byte so the layout can change later.

/// The first byte of a value in the fields' layout.
const VERSION: u8 = 1;

/// Appends fields to a value.
#[derive(Debug)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// A value of the fields' layout on its own; the tree holds them nested in entries
    /// ([`Writer::nested`]), so this is the tests' reference.
    #[cfg(test)]
    pub fn new() -> Self {
        Writer(vec![VERSION])
    }
    /// A value whose first byte is `first` rather than [`VERSION`]: a layout that holds other
    /// values (see [`Writer::nested`]) and must be told apart from them; with room for
    /// `capacity` bytes, so that a value of about that size is written without growing.
    pub fn tagged(first: u8, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity.max(1));
        bytes.push(first);
        Writer(bytes)
    }
    pub fn str(mut self, s: &str) -> Self {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        self
    }
    pub fn opt_str(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.u8(1).str(s),
            None => self.u8(0),
        }
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn f64(mut self, v: f64) -> Self {
        self.0.extend_from_slice(&v.to_bits().to_be_bytes());
        self
    }
    /// Length-prefixed bytes: a nested value written apart, the tests' reference for
    /// [`Writer::nested`].
    #[cfg(test)]
    pub fn bytes(mut self, b: &[u8]) -> Self {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&b[..len as usize]);
        self
    }
    /// A nested value: its length, then the fields' layout as `value` writes it after the
    /// version byte. Written in place, with no buffer of its own to grow and copy.
    pub fn nested(mut self, value: impl FnOnce(Writer) -> Writer) -> Self {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        self.0.push(VERSION);
        let mut w = value(self);
        let len = u32::try_from(w.0.len() - at - 4).unwrap_or(u32::MAX);
        if let Some(prefix) = w.0.get_mut(at..at + 4) {
            prefix.copy_from_slice(&len.to_be_bytes());
        }
        w
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads fields back; every read fails cleanly on short or malformed input.
#[derive(Debug)]
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Some(Reader(rest)),
            _ => None,
        }
    }
    /// Reads a value written with [`Writer::tagged`]`(first)`.
    pub fn tagged(bytes: &'a [u8], first: u8) -> Option<Self> {
        match bytes.split_first() {
            Some((&b, rest)) if b == first => Some(Reader(rest)),
            _ => None,
        }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    pub fn str(&mut self) -> Option<String> {
        let len = usize::from(u16::from_be_bytes(self.take()?));
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(u32::from_be_bytes(self.take()?)).ok()?;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }
    pub fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take()?))
    }
    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(u64::from_be_bytes(self.take()?)))
    }
    /// Whether every byte was read: fields appended to a layout later are read only when
    /// present, so that values written before them still decode.
    pub fn at_end(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let bytes =
            Writer::new().str("hau-01").opt_str(None).opt_str(Some("cm")).u32(7).i64(-3).u64(9).f64(1.5).finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(r.str().as_deref(), Some("hau-01"));
        assert_eq!(r.opt_str(), Some(None));
        assert_eq!(r.opt_str(), Some(Some("cm".into())));
        assert_eq!((r.u32(), r.i64(), r.u64(), r.f64()), (Some(7), Some(-3), Some(9), Some(1.5)));
        assert_eq!(r.u8(), None);

        let nested = Writer::tagged(2, 0).bytes(&bytes).bytes(&[]).finish();
        assert!(Reader::new(&nested).is_none(), "a tagged value is not read as the fields' layout");
        let mut r = Reader::tagged(&nested, 2).unwrap();
        assert_eq!((r.bytes(), r.bytes(), r.bytes()), (Some(&bytes[..]), Some(&[][..]), None));
        assert!(r.at_end());

        // A value nested in place is the same bytes as one written apart and copied.
        let fields = |w: Writer| w.str("hau-01").opt_str(Some("cm")).u32(7).f64(1.5);
        let apart = Writer::tagged(2, 0).u8(1).bytes(&fields(Writer::new()).finish()).u8(9).finish();
        let in_place = Writer::tagged(2, 4).u8(1).nested(fields).u8(9).finish();
        assert_eq!(in_place, apart);
        let empty = Writer::tagged(2, 0).nested(|w| w).finish();
        assert_eq!(empty, Writer::tagged(2, 0).bytes(&Writer::new().finish()).finish());
    }

    #[test]
    fn short_or_foreign_input_is_refused() {
        assert!(Reader::new(&[]).is_none());
        assert!(Reader::new(&[99]).is_none());
        let mut r = Reader::new(&[VERSION, 0, 9, b'a']).unwrap();
        assert_eq!(r.str(), None);
    }
}
