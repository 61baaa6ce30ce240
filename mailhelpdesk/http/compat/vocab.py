"""The seed adapters' vocabularies, from the `[compat.<seed>]` tables of the config
(config.py; the defaults and how to change them are in docs/compat.md)."""

from __future__ import annotations

from mailhelpdesk.config import TeamsworkCompatConfig, TiHelpdeskCompatConfig, TikettiCompatConfig
from mailhelpdesk.services.compat_vocab import Vocabulary


def tihelpdesk(cfg: TiHelpdeskCompatConfig) -> Vocabulary:
    return Vocabulary(
        statuses=cfg.statuses,
        priorities=cfg.priorities,
        on_hold_days=cfg.on_hold_days,
        fields={"product": cfg.product_field, "type": cfg.type_field},
    )


def tiketti(cfg: TikettiCompatConfig) -> Vocabulary:
    return Vocabulary(
        statuses=cfg.statuses, priorities=cfg.priorities, on_hold_days=cfg.on_hold_days
    )


def teamswork(cfg: TeamsworkCompatConfig) -> Vocabulary:
    return Vocabulary(
        statuses=cfg.statuses, priorities=cfg.priorities, on_hold_days=cfg.on_hold_days
    )
