//! Spreading tenants over the instances: the arithmetic of shares.
//!
//! An instance's share is the tenants it serves over the instances counted (alive,
//! serving some tenants, see [`super::tick`]), rounded up. It takes free leases up to
//! its share (the statement of each look does, see [`super::tick`]), and any lease left
//! free for longer than a lease's length besides: a tenant without a leader is worse
//! than a busy instance. An instance leading more than its share hands the surplus over
//! (its work stops, then its leases are given up and left to the others for a lease's
//! length), but never more than the others have room for below their shares, so that
//! what it lets go is taken at the others' next look (a quarter of a second) rather
//! than coming back to it. At most one hand-over per lease's length, so the looks that
//! count the instances settle before the next.
//!
//! So when an instance joins, the others hand it its share within a lease's length and
//! a look; when one leaves (SIGTERM: it stops counting itself, then gives up each
//! lease as its work stops) or dies (its liveness session ends), the others' shares
//! grow to take its tenants at their next look. Each instance ends within its share,
//! `ceil(tenants / instances)`, once the looks agree on who is counted.

/// The share of `tenants` an instance has among `instances` (itself included).
pub fn share(tenants: usize, instances: usize) -> usize {
    tenants.div_ceil(instances.max(1))
}

/// How many of its leases an instance leading `mine` hands over, its share being
/// `share`, when the other counted instances lead `others`: its surplus, as far as the
/// others have room for it.
pub fn to_hand_over(mine: usize, share: usize, others: impl IntoIterator<Item = usize>) -> usize {
    let surplus = mine.saturating_sub(share);
    if surplus == 0 {
        return 0;
    }
    let room: usize = others
        .into_iter()
        .map(|leads| share.saturating_sub(leads))
        .sum();
    surplus.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_the_tenants_over_the_instances_rounded_up() {
        assert_eq!(share(12, 2), 6);
        assert_eq!(share(12, 3), 4);
        assert_eq!(share(13, 3), 5);
        assert_eq!(share(1, 5), 1, "one tenant among many is somebody's");
        assert_eq!(share(4, 1), 4, "alone, everything is its share");
        assert_eq!(share(4, 0), 4, "counting nobody yet, as alone");
        assert_eq!(share(0, 3), 0, "stopping, it serves none");
    }

    #[test]
    fn the_surplus_goes_as_far_as_the_others_have_room() {
        // 12 tenants, a third instance joins: each of two hands two to it.
        assert_eq!(to_hand_over(6, 4, [6, 0]), 2);
        // Within its share: nothing to hand over, whatever the others lead.
        assert_eq!(to_hand_over(4, 4, [0, 0]), 0);
        // Over it, but the others are full: it keeps them rather than see them free.
        assert_eq!(to_hand_over(5, 4, [4, 4]), 0);
        // Room for one only.
        assert_eq!(to_hand_over(7, 4, [4, 3]), 1);
        // Alone: no others, no room.
        assert_eq!(to_hand_over(9, 4, []), 0);
    }

    #[test]
    fn instances_that_each_hand_over_their_surplus_end_within_their_shares() {
        // Every instance's surplus fits in the room of the others together: 1,000
        // tenants on two instances, a third joins.
        let (a, b, c) = (500, 500, 0);
        let share = share(1_000, 3);
        let from_a = to_hand_over(a, share, [b, c]);
        let from_b = to_hand_over(b, share, [a, c]);
        assert_eq!((from_a, from_b), (166, 166));
        assert!(c + from_a + from_b <= share);
        assert!(a - from_a <= share && b - from_b <= share);
    }
}
