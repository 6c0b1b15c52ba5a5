//! Creating and deleting nf_tables set and map elements straight through nfnetlink, in one
//! batch (one transaction), without libnftables.
//!
//! Every ADD and DEL of `ipMasq` and of portmap changes only map elements. Through libnftables
//! each such process paid for loading the library and its dependencies (~0.7 ms), creating a
//! context (~0.2 ms) and, per command, filling its ruleset cache (~1 ms) — about 2–3 ms of a
//! plugin call measured on the development VM, against ~0.1 ms for the batch itself. The tables,
//! maps and chains the elements live in are still made with nft scripts ([`super::nftexec`]),
//! only when the kernel reports them missing (ENOENT), which is rare.
//!
//! Each [`Op`] carries its nft text too: the same change as a line of an nft script, for the
//! debug log and the unit tests.

use super::nftset::{
    NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_USERDATA, NFTA_VERDICT_CHAIN, SUBSYS_NFTABLES,
};
use crate::nfnl::{Attrs, Nfnl, NlErr, NLM_F_CREATE, NLM_F_EXCL};

const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_VERDICT_CODE: u16 = 1;
/// `NFT_JUMP` (a negative verdict code, sent as big-endian u32).
const NFT_JUMP: i32 = -3;
/// `NFTNL_UDATA_SET_ELEM_COMMENT`: libnftnl's type-length-value user data, as nft writes it.
const UDATA_COMMENT: u8 = 0;

/// What an element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A set element (or a delete, which needs only the key).
    None,
    /// Register bytes of a data map's value.
    Value(Vec<u8>),
    /// A verdict map's `jump <chain>`.
    Jump(String),
}

/// One element change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// `create element` (fails with EEXIST on an existing key) or `delete element` (ENOENT on a
    /// missing one).
    pub create: bool,
    pub set: String,
    /// Register bytes of the key (see [`super::nftset::key`]).
    pub key: Vec<u8>,
    pub data: Data,
    pub comment: Option<String>,
    /// The same change as a line of an nft script.
    pub text: String,
}

impl Op {
    /// `create element <table> <set> { <key_text> comment "<comment>" : <data_text> }`.
    pub fn create(
        table: &str,
        set: &str,
        key: Vec<u8>,
        key_text: &str,
        data: Data,
        data_text: &str,
        comment: &str,
    ) -> Op {
        let value = if data_text.is_empty() {
            String::new()
        } else {
            format!(" : {data_text}")
        };
        Op {
            create: true,
            set: set.to_string(),
            key,
            data,
            comment: Some(comment.to_string()),
            text: format!(
                "create element {table} {set} {{ {key_text} comment \"{comment}\"{value} }}\n"
            ),
        }
    }

    /// `delete element <table> <set> { <key_text> }`.
    pub fn delete(table: &str, set: &str, key: Vec<u8>, key_text: &str) -> Op {
        Op {
            create: false,
            set: set.to_string(),
            key,
            data: Data::None,
            comment: None,
            text: format!("delete element {table} {set} {{ {key_text} }}\n"),
        }
    }

    /// The NEWSETELEM/DELSETELEM attributes of this change in table `table`.
    fn attrs(&self, table: &str) -> Vec<u8> {
        let mut a = Attrs::new();
        a.put_str(NFTA_SET_ELEM_LIST_TABLE, table)
            .put_str(NFTA_SET_ELEM_LIST_SET, &self.set)
            .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                l.nest(NFTA_LIST_ELEM, |e| {
                    e.nest(NFTA_SET_ELEM_KEY, |k| {
                        k.put(NFTA_DATA_VALUE, &self.key);
                    });
                    match &self.data {
                        Data::None => {}
                        Data::Value(v) => {
                            e.nest(NFTA_SET_ELEM_DATA, |d| {
                                d.put(NFTA_DATA_VALUE, v);
                            });
                        }
                        Data::Jump(chain) => {
                            e.nest(NFTA_SET_ELEM_DATA, |d| {
                                d.nest(NFTA_DATA_VERDICT, |v| {
                                    v.put(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes())
                                        .put_str(NFTA_VERDICT_CHAIN, chain);
                                });
                            });
                        }
                    }
                    if let Some(c) = &self.comment {
                        e.put(NFTA_SET_ELEM_USERDATA, &udata_comment(c));
                    }
                });
            });
        a.0
    }
}

/// The comment as libnftnl user data: type, length, the string with its NUL (at most 255
/// bytes in all; tags are far shorter).
fn udata_comment(c: &str) -> Vec<u8> {
    let mut s: Vec<u8> = c.bytes().take(254).collect();
    s.push(0);
    let mut out = vec![UDATA_COMMENT, s.len() as u8];
    out.extend_from_slice(&s);
    out
}

/// The nft script equivalent to `ops`.
pub fn script(ops: &[Op]) -> String {
    ops.iter().map(|o| o.text.as_str()).collect()
}

/// Apply `ops` to table `table` of `family` as one transaction: all or nothing. The kernel's
/// errno on failure: ENOENT (a table, set, chain or deleted key is missing), EEXIST (a created
/// key exists), ...
pub fn commit(nl: &mut Nfnl, family: u8, table: &str, ops: &[Op]) -> Result<(), NlErr> {
    tracing::debug!(script = script(ops), "nf_tables batch");
    let msgs: Vec<(u16, u16, u8, Vec<u8>)> = ops
        .iter()
        .map(|o| {
            let (t, flags) = if o.create {
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL)
            } else {
                (NFT_MSG_DELSETELEM, 0)
            };
            ((SUBSYS_NFTABLES << 8) | t, flags, family, o.attrs(table))
        })
        .collect();
    nl.batch(SUBSYS_NFTABLES, &msgs)
}

/// Deletions per transaction in [`delete_all`]: when elements vanished meanwhile, each missing
/// one is answered with an error, and those answers must fit the socket's receive buffer.
const DELETE_CHUNK: usize = 128;

/// Delete, in one transaction per `DELETE_CHUNK` elements; when something vanished meanwhile
/// (ENOENT aborts a whole transaction), delete what is still there one by one.
pub fn delete_all(nl: &mut Nfnl, family: u8, table: &str, ops: &[Op]) -> Result<(), NlErr> {
    for chunk in ops.chunks(DELETE_CHUNK) {
        match commit(nl, family, table, chunk) {
            Err(e) if e.is_missing() => {
                for op in chunk {
                    match commit(nl, family, table, std::slice::from_ref(op)) {
                        Err(e) if !e.is_missing() => return Err(e),
                        _ => {}
                    }
                }
            }
            r => r?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nftset::parse_elem_for_tests as parse;
    use crate::nfnl::{attr, attrs};

    #[test]
    fn encodes_what_the_reader_decodes() {
        let op = Op::create(
            "inet t",
            "hairpin4",
            vec![10, 0, 0, 5],
            "10.0.0.5",
            Data::Jump("hp-1".into()),
            "jump hp-1",
            "cni:n/c/eth0",
        );
        assert_eq!(
            op.text,
            "create element inet t hairpin4 { 10.0.0.5 comment \"cni:n/c/eth0\" : jump hp-1 }\n"
        );
        let a = op.attrs("t");
        assert_eq!(
            attr(&a, NFTA_SET_ELEM_LIST_SET).map(|v| v.to_vec()),
            Some(b"hairpin4\0".to_vec())
        );
        let list = attr(&a, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        let (kind, elem) = attrs(list).next().unwrap();
        assert_eq!(kind, NFTA_LIST_ELEM);
        let e = parse(elem);
        assert_eq!(e.key, [10, 0, 0, 5]);
        assert_eq!(e.chain.as_deref(), Some("hp-1"));
        assert_eq!(e.comment.as_deref(), Some("cni:n/c/eth0"));

        let v = Op::create(
            "inet t",
            "m",
            vec![6, 0, 0, 0],
            "tcp",
            Data::Value(vec![1, 2, 3, 4]),
            "0x1",
            "x",
        );
        let list = attr(&v.attrs("t"), NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap()
            .to_vec();
        assert_eq!(parse(attrs(&list).next().unwrap().1).data, [1, 2, 3, 4]);

        let d = Op::delete("inet t", "m", vec![6, 0, 0, 0], "tcp");
        assert_eq!(d.text, "delete element inet t m { tcp }\n");
        let list = attr(&d.attrs("t"), NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap()
            .to_vec();
        let e = parse(attrs(&list).next().unwrap().1);
        assert!(e.data.is_empty() && e.chain.is_none() && e.comment.is_none());
    }
}
