//! Per-thread stores of the memory every proxied request needs again: the header maps of
//! its request and answer, and the buffer its upstream request's head is written into.
//!
//! Why: a request through the HTTP/1.1 loop ([`crate::h1`]) and the client
//! ([`crate::client`]) otherwise allocates and frees each of them anew: five allocations
//! (two per header map), the most of any part of a request. A request and its upstream
//! exchange stay on one thread, so a thread-local list needs no lock.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::HeaderMap;

/// Most header maps a thread keeps: about one per request in flight on it.
const KEPT_MAPS: usize = 64;
/// Largest header map kept (in fields): a map grown for an unusual message is let go.
const MAX_KEPT_FIELDS: usize = 256;
/// Most head buffers a thread keeps: a buffer is held only while a head is written.
const KEPT_BUFFERS: usize = 4;
/// Largest head buffer kept (a head with a small body inlined).
const MAX_KEPT_BUFFER: usize = 32 * 1024;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `fields`.
pub(crate) fn header_map(fields: usize) -> HeaderMap {
    match take(&MAPS) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, which its message no longer needs, for a later [`header_map`].
pub(crate) fn give_back_header_map(mut map: HeaderMap) {
    // A map that never allocated (`HeaderMap::new`) saves nothing.
    if (1..=MAX_KEPT_FIELDS).contains(&map.capacity()) {
        map.clear();
        keep(&MAPS, map, KEPT_MAPS);
    }
}

/// An empty buffer for a message head, given back when dropped.
pub(crate) fn head_buffer() -> HeadBuffer {
    HeadBuffer(take(&BUFFERS).unwrap_or_else(|| Vec::with_capacity(512)))
}

/// A buffer from [`head_buffer`].
pub(crate) struct HeadBuffer(Vec<u8>);

impl std::ops::Deref for HeadBuffer {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for HeadBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for HeadBuffer {
    fn drop(&mut self) {
        let mut buffer = std::mem::take(&mut self.0);
        if buffer.capacity() <= MAX_KEPT_BUFFER {
            buffer.clear();
            keep(&BUFFERS, buffer, KEPT_BUFFERS);
        }
    }
}

fn take<T: 'static>(store: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    // During the thread's teardown the store is gone: a new one is made.
    store.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

fn keep<T: 'static>(store: &'static LocalKey<RefCell<Vec<T>>>, item: T, most: usize) {
    let _ = store.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < most {
            s.push(item);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn maps_and_buffers_come_back_empty_and_are_reused() {
        let mut map = header_map(8);
        map.insert("x-a", HeaderValue::from_static("1"));
        let capacity = map.capacity();
        give_back_header_map(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity, "the same map, not a new one");

        let mut buffer = head_buffer();
        buffer.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let address = buffer.as_ptr();
        drop(buffer);
        let again = head_buffer();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address, "the same buffer, not a new one");
        drop(again);

        // What would hoard memory is let go.
        let mut big = head_buffer();
        big.reserve(MAX_KEPT_BUFFER * 2);
        drop(big);
        assert!(head_buffer().capacity() <= MAX_KEPT_BUFFER);
    }
}
