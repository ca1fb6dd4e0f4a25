// SPDX-License-Identifier: GPL-2.0-only
include!(concat!(env!("OUT_DIR"), "/memcg_ops_skel.rs"));
