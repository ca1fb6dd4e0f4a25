// SPDX-License-Identifier: GPL-2.0-only
include!(concat!(env!("OUT_DIR"), "/observe_skel.rs"));
