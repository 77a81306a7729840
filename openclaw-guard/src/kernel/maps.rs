//! The maps a [`KernelPlan`] fills, as typed handles, and the one way the plan gets
//! into them: new and changed entries first, in every map, then the stale ones out, so
//! what both the old and the new plan protect stays protected throughout.

use std::{collections::HashMap, hash::Hash};

use anyhow::Context as _;
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap as BpfHashMap, MapData, MapError,
    },
    Pod,
};
use openclaw_guard_common::{names, EgressRule, InodeKey};

use super::{loader::Guard, plan::KernelPlan};

/// A plan's map as the plan holds it: its entries by key, written and removed one by
/// one. Hash maps key by the plan's key; LPM tries by (prefix length, address).
trait Table<K, V> {
    fn put(&mut self, k: &K, v: &V) -> Result<(), MapError>;
    fn take(&mut self, k: &K) -> Result<(), MapError>;
    fn entries(&self) -> HashMap<K, V>;
}

impl<T, K, V> Table<K, V> for BpfHashMap<T, K, V>
where
    T: std::borrow::BorrowMut<MapData>,
    K: Pod + Eq + Hash,
    V: Pod,
{
    fn put(&mut self, k: &K, v: &V) -> Result<(), MapError> {
        self.insert(*k, *v, 0)
    }

    fn take(&mut self, k: &K) -> Result<(), MapError> {
        self.remove(k)
    }

    fn entries(&self) -> HashMap<K, V> {
        self.iter().filter_map(Result::ok).collect()
    }
}

impl<T, const N: usize> Table<(u32, [u8; N]), EgressRule> for LpmTrie<T, [u8; N], EgressRule>
where
    T: std::borrow::BorrowMut<MapData>,
{
    fn put(&mut self, k: &(u32, [u8; N]), v: &EgressRule) -> Result<(), MapError> {
        self.insert(&Key::new(k.0, k.1), *v, 0)
    }

    fn take(&mut self, k: &(u32, [u8; N])) -> Result<(), MapError> {
        self.remove(&Key::new(k.0, k.1))
    }

    fn entries(&self) -> HashMap<(u32, [u8; N]), EgressRule> {
        self.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| ((k.prefix_len(), k.data()), v))
            .collect()
    }
}

/// Which half of a sync: the new and changed entries in, or the stale ones out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    In,
    Out,
}

/// One half of making `t` hold `new` where it held `old`. In: the entries `old` does
/// not hold as they are (all of them when `all`); returns how many the kernel refused.
/// Out: what `old` has and `new` has not.
fn sync<K, V, T>(
    t: &mut T,
    half: Half,
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
    all: bool,
) -> usize
where
    K: Eq + Hash,
    V: PartialEq,
    T: Table<K, V>,
{
    match half {
        Half::In => new
            .iter()
            .filter(|(k, v)| all || old.get(k) != Some(v))
            .filter(|(k, v)| t.put(k, v).is_err())
            .count(),
        Half::Out => {
            for k in old.keys().filter(|k| !new.contains_key(k)) {
                // Already gone (a map emptied by hand) is what was wanted.
                let _ = t.take(k);
            }
            0
        }
    }
}

impl Guard {
    /// A hash map of the object, typed.
    pub(super) fn hash<K: Pod, V: Pod>(
        &mut self,
        name: &str,
    ) -> anyhow::Result<BpfHashMap<&mut MapData, K, V>> {
        let map = self
            .ebpf_mut()
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))?;
        Ok(BpfHashMap::try_from(map)?)
    }

    fn trie<const N: usize>(
        &mut self,
        name: &str,
    ) -> anyhow::Result<LpmTrie<&mut MapData, [u8; N], EgressRule>> {
        let map = self
            .ebpf_mut()
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))?;
        Ok(LpmTrie::try_from(map)?)
    }

    /// Makes the maps hold `new` where they held `old` (the plan in force, or what
    /// [`Guard::current_plan`] read back). Protected files and names the kernel
    /// refuses (a full map) are said in `new.problems` and retried at the next sync.
    /// A refused exec or egress entry (those rules have no fallback) fails the sync
    /// and puts back what `old` held, so the policy in force stays whole.
    pub fn sync_plan(&mut self, old: &KernelPlan, new: &mut KernelPlan) -> anyhow::Result<()> {
        // After a refusal `old` does not say what the kernel holds: all of it again.
        let all = old.refused > 0;
        let (refused_files, refused) = self.sync_maps(Half::In, old, new, all)?;
        if refused > 0 {
            // The new plan's own entries out, the values it changed back.
            self.sync_maps(Half::Out, new, old, false)?;
            self.sync_maps(Half::In, new, old, false)?;
            anyhow::bail!(
                "the kernel refused {refused} exec deny or egress entries (a map is full); the maps hold the policy in force"
            );
        }
        self.sync_maps(Half::Out, old, new, false)?;
        new.refused = refused_files;
        if refused_files > 0 {
            new.problems.push(format!(
                "{refused_files} protected-file entries refused by the kernel (its maps are full until the stale entries go): retried at the next re-plan"
            ));
        }
        Ok(())
    }

    /// One half of a sync, in every map of the plan. Returns the entries refused:
    /// protected files and names, then exec deny and egress.
    fn sync_maps(
        &mut self,
        half: Half,
        old: &KernelPlan,
        new: &KernelPlan,
        all: bool,
    ) -> anyhow::Result<(usize, usize)> {
        let (o, n, h) = (old, new, (half, all));
        let files = self.sync_hash(names::PROTECTED_INODES, h, &o.inodes, &n.inodes)?
            + self.sync_hash(names::PROTECTED_NAMES, h, &o.names, &n.names)?;
        let rules = self.sync_hash(names::EXEC_DENY, h, &o.exec_deny, &n.exec_deny)?
            + self.sync_trie(names::EGRESS_V4, h, &o.egress_v4, &n.egress_v4)?
            + self.sync_trie(names::EGRESS_V6, h, &o.egress_v6, &n.egress_v6)?
            + self.sync_hash(names::EGRESS_NAMES, h, &o.egress_names, &n.egress_names)?;
        Ok((files, rules))
    }

    /// [`sync`] on the hash map `name`; `(half, all)` as there.
    fn sync_hash<K: Pod + Eq + Hash, V: Pod + PartialEq>(
        &mut self,
        name: &str,
        (half, all): (Half, bool),
        old: &HashMap<K, V>,
        new: &HashMap<K, V>,
    ) -> anyhow::Result<usize> {
        Ok(sync(&mut self.hash(name)?, half, old, new, all))
    }

    /// [`sync`] on the egress trie `name`; `(half, all)` as there.
    fn sync_trie<const N: usize>(
        &mut self,
        name: &str,
        (half, all): (Half, bool),
        old: &HashMap<(u32, [u8; N]), EgressRule>,
        new: &HashMap<(u32, [u8; N]), EgressRule>,
    ) -> anyhow::Result<usize> {
        Ok(sync(&mut self.trie(name)?, half, old, new, all))
    }

    /// Makes the map `name` hold exactly `want` (new entries first, then the rest out).
    fn make_exactly<K: Pod + Eq + Hash, V: Pod + PartialEq>(
        &mut self,
        name: &str,
        want: &HashMap<K, V>,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut map = self.hash::<K, V>(name)?;
        let held = map.entries();
        let refused = sync(&mut map, Half::In, &held, want, false);
        anyhow::ensure!(
            refused == 0,
            "the kernel refused {refused} {what} (a map is full)"
        );
        sync(&mut map, Half::Out, &held, want, false);
        Ok(())
    }

    /// Makes `GUARD_FILES` exactly `files`.
    pub fn set_guard_files(&mut self, files: &HashMap<InodeKey, u32>) -> anyhow::Result<()> {
        self.make_exactly(names::GUARD_FILES, files, "guarded files")
    }

    /// The resolvers whose answers the DNS sensor believes: exactly `addrs` (IPv4 as
    /// IPv4-mapped IPv6).
    pub fn set_resolvers(&mut self, addrs: &[[u8; 16]]) -> anyhow::Result<()> {
        let want: HashMap<[u8; 16], u32> = addrs.iter().map(|a| (*a, 1)).collect();
        self.make_exactly(names::RESOLVERS, &want, "resolvers")
    }

    /// What the (adopted) maps hold now, as a plan to sync the next one against.
    pub fn current_plan(&mut self) -> anyhow::Result<KernelPlan> {
        let mut plan = KernelPlan::default();
        plan.exec_deny = self.hash(names::EXEC_DENY)?.entries();
        plan.inodes = self.hash(names::PROTECTED_INODES)?.entries();
        plan.names = self.hash(names::PROTECTED_NAMES)?.entries();
        plan.egress_v4 = self.trie(names::EGRESS_V4)?.entries();
        plan.egress_v6 = self.trie(names::EGRESS_V6)?.entries();
        plan.egress_names = self.hash(names::EGRESS_NAMES)?.entries();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map that refuses past `room` entries, like a full kernel map.
    struct Bounded {
        held: HashMap<u32, u32>,
        room: usize,
        puts: Vec<u32>,
    }

    impl Table<u32, u32> for Bounded {
        fn put(&mut self, k: &u32, v: &u32) -> Result<(), MapError> {
            if self.held.len() >= self.room && !self.held.contains_key(k) {
                return Err(MapError::OutOfBounds {
                    index: *k,
                    max_entries: self.room as u32,
                });
            }
            self.puts.push(*k);
            self.held.insert(*k, *v);
            Ok(())
        }

        fn take(&mut self, k: &u32) -> Result<(), MapError> {
            self.held.remove(k);
            Ok(())
        }

        fn entries(&self) -> HashMap<u32, u32> {
            self.held.clone()
        }
    }

    #[test]
    fn new_entries_go_in_before_stale_ones_go_out_and_refusals_are_counted() {
        let old: HashMap<u32, u32> = [(1, 10), (2, 20), (3, 30)].into();
        let new: HashMap<u32, u32> = [(2, 20), (3, 31), (4, 40)].into();
        let mut t = Bounded {
            held: old.clone(),
            room: 5,
            puts: Vec::new(),
        };
        assert_eq!(sync(&mut t, Half::In, &old, &new, false), 0);
        // Only what changed went in; everything both plans hold is still there.
        t.puts.sort_unstable();
        assert_eq!(t.puts, [3, 4]);
        assert_eq!(t.held.len(), 4);
        assert_eq!(
            t.held[&1], 10,
            "the stale entry stays until the new ones are in"
        );
        sync(&mut t, Half::Out, &old, &new, false);
        assert_eq!(t.entries(), new);

        // A full map: the refusal is counted, and `all` puts everything again.
        let mut full = Bounded {
            held: old.clone(),
            room: 3,
            puts: Vec::new(),
        };
        assert_eq!(sync(&mut full, Half::In, &old, &new, false), 1);
        sync(&mut full, Half::Out, &old, &new, false);
        assert_eq!(sync(&mut full, Half::In, &old, &new, true), 0);
        assert_eq!(full.entries(), new);
    }

    #[test]
    fn a_refused_sync_is_undone_by_syncing_back() {
        let old: HashMap<u32, u32> = [(1, 10), (2, 20)].into();
        let new: HashMap<u32, u32> = [(2, 21), (3, 30), (4, 40)].into();
        let mut t = Bounded {
            held: old.clone(),
            room: 3,
            puts: Vec::new(),
        };
        // 2 changed and 3 went in; 4 found the map full.
        assert_eq!(sync(&mut t, Half::In, &old, &new, false), 1);
        assert_ne!(t.entries(), old);
        // What `sync_plan` does then: the new plan's own entries out, old values back.
        sync(&mut t, Half::Out, &new, &old, false);
        assert_eq!(sync(&mut t, Half::In, &new, &old, false), 0);
        assert_eq!(t.entries(), old);
    }
}
