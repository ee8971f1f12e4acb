//! The device agent's two driver steps, as every board's image runs them around its own
//! scenario: frames and the timer in ([`receive`]), frames out ([`transmit`]). Both are out of
//! line on purpose: what the agent does with an answer (parsing, judging the chain, adopting
//! roots) and its request buffers (the frame, the CSR, the key's signing) are then never on
//! the stack during a TLS call, which is the device's deepest point (`ci/size-report.sh`).

use rand_core::CryptoRngCore;
use sigil_core::agent::{DeviceAgent, FreshKey};
use sigil_core::crypto::SignatureVerifier;
use sigil_core::Instant;

use crate::link::{Link, LinkError, Port, MAX_SEND};

/// In: a frame from the link (TLS frames outside a session are late ones: the agent ignores
/// them), then the timer if it is due.
///
/// # Errors
///
/// The link's, when bytes that were not a frame were skipped (the timer still ran).
#[inline(never)]
pub fn receive<P, K, V, const CHAIN: usize, const ANCHORS: usize, const BYTES: usize>(
    agent: &mut DeviceAgent<'_, K, V, CHAIN, ANCHORS, BYTES>,
    link: &mut Link<'_, P>,
    now: Instant,
) -> Result<(), LinkError>
where
    P: Port,
    K: FreshKey,
    V: SignatureVerifier,
{
    let polled = match link.poll() {
        Ok(Some(frame)) => {
            agent.handle_frame(now, frame);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if agent.poll_timeout().is_some_and(|t| now >= t) {
        agent.handle_timeout(now);
    }
    polled
}

/// Out: every frame the agent has for the link.
#[inline(never)]
pub fn transmit<P, R, K, V, const CHAIN: usize, const ANCHORS: usize, const BYTES: usize>(
    agent: &mut DeviceAgent<'_, K, V, CHAIN, ANCHORS, BYTES>,
    rng: &mut R,
    link: &mut Link<'_, P>,
) where
    P: Port,
    R: CryptoRngCore,
    K: FreshKey,
    V: SignatureVerifier,
{
    let mut out = [0u8; MAX_SEND];
    while let Some(frame) = agent.poll_transmit(rng, &mut out) {
        link.write(frame);
    }
}
