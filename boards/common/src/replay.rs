//! A recorded TLS session played back: the transport the firmware bench and the host test of
//! the recorded handshake (`tests/tests/device_tls.rs`) run the device's embedded-tls client
//! on. It reads the recorded server's bytes and checks every byte the client writes against
//! the recorded client's (a replay is only valid for the same ClientHello and key share).

/// The recorded bytes, each direction's rest.
#[derive(Debug)]
pub struct Replay<'a> {
    server: &'a [u8],
    client: &'a [u8],
}

impl<'a> Replay<'a> {
    /// A replay of `server` (what the server sent) expecting `client` (what the client sent).
    pub const fn new(server: &'a [u8], client: &'a [u8]) -> Self {
        Self { server, client }
    }

    /// Recorded client bytes not written yet (0 once the client wrote them all).
    pub const fn unwritten(&self) -> usize {
        self.client.len()
    }
}

impl embedded_io::ErrorType for Replay<'_> {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.server.len());
        let (now, rest) = self.server.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(now);
        }
        self.server = rest;
        Ok(n)
    }
}

impl embedded_io::Write for Replay<'_> {
    /// Accepts `buf` only if it is what the recorded client wrote next.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self.client.strip_prefix(buf) {
            Some(rest) => {
                self.client = rest;
                Ok(buf.len())
            }
            None => Err(embedded_io::ErrorKind::InvalidData),
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
