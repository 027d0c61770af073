"""Built-in vectorized column transforms, used by raw casts and by mappings.

Each is ``fn(array, **params) -> array`` over pyarrow arrays; none loops over
rows in Python (symbol canonicalization works on the distinct values only).
They are registered by name through ``register_transforms``, like a plugin's.

Every cast is idempotent: applied to a column that already has its output type
(``from_ms`` or ``iso8601`` on a timestamp, ``to_double`` on a double) it
returns the column unchanged. Raw tables already carry the minimal casts, so a
mapping may name the cast again, as the seed's examples do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

TS_US = pa.timestamp("us", tz="UTC")

Transform = Callable[..., pa.Array]


class TransformError(ValueError):
    """A transform cannot convert its input; the rows at fault go to quarantine."""


def _flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _cast(array: pa.Array, to: pa.DataType, what: str) -> pa.Array:
    try:
        return pc.cast(array, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TransformError(f"not {what}: {exc}") from exc


def _require_all_match(array: pa.Array, matched: pa.Array, what: str) -> None:
    bad = pc.and_(pc.invert(pc.fill_null(matched, False)), pc.is_valid(array))
    if pc.any(bad).as_py():
        first = array.filter(bad)[0].as_py()
        raise TransformError(f"not {what}: {first!r}")


def _already_time(array: pa.Array) -> pa.Array | None:
    """A timestamp column as timestamp[us, UTC] (a no-op for one that is), else None: the time casts are
    idempotent."""
    if not pa.types.is_timestamp(array.type):
        return None
    if array.type.tz is None:
        array = pc.assume_timezone(array, "UTC")
    return pc.cast(array, TS_US)


def _epoch(array: pa.Array, us_per_unit: int = 1, units_per_us: int = 1) -> pa.Array:
    array = _flat(array)
    if (done := _already_time(array)) is not None:
        return done
    if _is_text(array):
        array = pc.utf8_trim_whitespace(array)
    ints = _cast(array, pa.int64(), "an integer epoch")
    if us_per_unit != 1:
        ints = pc.multiply_checked(ints, us_per_unit)
    if units_per_us != 1:  # floor division, also right for negative epochs
        shifted = pc.subtract(ints, pc.if_else(pc.less(ints, 0), units_per_us - 1, 0))
        ints = pc.divide(shifted, units_per_us)
    return pc.cast(ints, TS_US)


def from_ms(array: pa.Array) -> pa.Array:
    """Epoch milliseconds (integers or integer text) to timestamp[us, UTC]."""
    return _epoch(array, us_per_unit=1_000)


def from_us(array: pa.Array) -> pa.Array:
    """Epoch microseconds to timestamp[us, UTC]."""
    return _epoch(array)


def from_ns(array: pa.Array) -> pa.Array:
    """Epoch nanoseconds to timestamp[us, UTC], floored to the microsecond."""
    return _epoch(array, units_per_us=1_000)


_DECIMAL = r"^(?P<sign>-?)(?P<whole>\d+)(?:\.(?P<frac>\d*))?$"


def from_s(array: pa.Array) -> pa.Array:
    """Epoch seconds to timestamp[us, UTC], floored to the microsecond.

    Decimal text (``"1707405124.123456789"``, Kraken's float seconds kept as
    text) is parsed exactly from its digits. Floats are accepted but carry the
    float's own error, which is why connectors should keep the JSON text.
    """
    array = _flat(array)
    if (done := _already_time(array)) is not None:
        return done
    if pa.types.is_integer(array.type):
        return _epoch(array, us_per_unit=1_000_000)
    if pa.types.is_floating(array.type):
        return pc.cast(pc.cast(pc.floor(pc.multiply(array, 1_000_000.0)), pa.int64()), TS_US)
    text = pc.utf8_trim_whitespace(_cast(array, pa.string(), "text"))
    parts = pc.extract_regex(text, _DECIMAL)
    _require_all_match(text, pc.is_valid(parts), "a decimal epoch in seconds")
    negative = pc.equal(pc.struct_field(parts, "sign"), "-")
    whole = pc.cast(pc.struct_field(parts, "whole"), pa.int64())
    frac = pc.struct_field(parts, "frac")
    micros = pc.cast(pc.utf8_slice_codeunits(pc.utf8_rpad(frac, 6, "0"), 0, 6), pa.int64())
    magnitude = pc.add(pc.multiply(whole, 1_000_000), micros)
    beyond_us = pc.greater(pc.utf8_length(pc.utf8_rtrim(pc.utf8_slice_codeunits(frac, 6), "0")), 0)
    signed = pc.if_else(negative, pc.negate(magnitude), magnitude)
    floored = pc.if_else(pc.and_(negative, beyond_us), pc.subtract(signed, 1), signed)
    return pc.cast(floored, TS_US)


_ISO = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"


def iso8601(array: pa.Array) -> pa.Array:
    """ISO-8601 text to timestamp[us, UTC]: ``Z`` or offsets, 0-9 fractional digits.

    Digits past the microsecond are dropped (floor), as for the epoch transforms;
    text without a zone is taken as UTC.
    """
    if (done := _already_time(_flat(array))) is not None:
        return done
    text = pc.utf8_trim_whitespace(_cast(_flat(array), pa.string(), "text"))
    _require_all_match(text, pc.match_substring_regex(text, _ISO), "an ISO-8601 time")
    text = pc.replace_substring_regex(text, r"(\.\d{6})\d+", r"\1")
    has_zone = pc.match_substring_regex(text, r"(Z|[+-]\d{2}:?\d{2})$")
    text = pc.if_else(has_zone, text, pc.binary_join_element_wise(text, "Z", ""))
    return _cast(text, TS_US, "an ISO-8601 time")


def to_double(array: pa.Array) -> pa.Array:
    """Numeric text or numbers to float64, correctly rounded (Arrow's parser)."""
    array = _flat(array)
    if array.type == pa.float64():
        return array
    if _is_text(array):
        try:  # venues send bare numbers: trim (a pass over the text) only when the plain parse fails
            return pc.cast(array, pa.float64())
        except pa.ArrowInvalid:
            array = pc.utf8_trim_whitespace(array)
    return _cast(array, pa.float64(), "a number")


def to_string(array: pa.Array) -> pa.Array:
    """Anything to text (integers as their decimal digits)."""
    array = _flat(array)
    return array if array.type == pa.string() else _cast(array, pa.string(), "representable as text")


def upper(array: pa.Array) -> pa.Array:
    return pc.utf8_upper(to_string(array))


def map_values(array: pa.Array, values: Mapping[str, str], strict: bool = True) -> pa.Array:
    """Replace each value by ``values[value]``; unknown values fail when ``strict``."""
    text = to_string(array)
    keys = pa.array(list(values.keys()), pa.string())
    index = pc.index_in(text, value_set=keys)
    if strict:
        _require_all_match(text, pc.is_valid(index), f"one of {sorted(values)}")
    mapped = pc.take(pa.array(list(values.values()), pa.string()), index)
    return mapped if strict else pc.coalesce(mapped, text)


def taker_side_from_maker_flag(array: pa.Array) -> pa.Array:
    """``is buyer maker`` flag to the taker's side: true -> SELL, false -> BUY."""
    flags = _flat(array)
    if not pa.types.is_boolean(flags.type):
        flags = pc.equal(pc.utf8_lower(to_string(flags)), "true")
    return pc.if_else(flags, "SELL", "BUY")


def invert_side(array: pa.Array) -> pa.Array:
    """Maker side to taker side: buy -> SELL, sell -> BUY (any case)."""
    return map_values(pc.utf8_lower(to_string(array)), {"buy": "SELL", "sell": "BUY"})


def canonical_symbol(
    array: pa.Array,
    pairs: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    quote_assets: Iterable[str] = (),
    separators: str = "-/_",
) -> pa.Array:
    """Venue symbol to canonical ``BASE-QUOTE``.

    ``pairs`` maps whole venue symbols (``XXBTZUSD: BTC-USD``); otherwise the
    symbol is split at a separator, or before the longest matching suffix in
    ``quote_assets`` (never by guessing lengths); ``aliases`` renames assets
    (``XBT: BTC``). Computed once per distinct value.
    """
    text = to_string(array)
    distinct = pc.unique(text).drop_null()
    converted = [
        _canonical_one(s, pairs or {}, aliases or {}, tuple(quote_assets), separators)
        for s in distinct.to_pylist()
    ]
    bad = [s for s, c in zip(distinct.to_pylist(), converted, strict=False) if c is None]
    if bad:
        raise TransformError(f"cannot split symbol {bad[0]!r} into BASE-QUOTE")
    return pc.take(pa.array(converted, pa.string()), pc.index_in(text, value_set=distinct))


def _canonical_one(
    symbol: str,
    pairs: Mapping[str, str],
    aliases: Mapping[str, str],
    quote_assets: tuple[str, ...],
    separators: str,
) -> str | None:
    if symbol in pairs:
        return pairs[symbol].upper()
    upper_symbol = symbol.upper()
    base = quote = None
    for sep in separators:
        if sep in upper_symbol:
            base, _, quote = upper_symbol.partition(sep)
            break
    else:
        for q in sorted((q.upper() for q in quote_assets), key=len, reverse=True):
            if upper_symbol.endswith(q) and len(upper_symbol) > len(q):
                base, quote = upper_symbol[: -len(q)], q
                break
    if not base or not quote:
        return None
    return f"{aliases.get(base, base)}-{aliases.get(quote, quote)}"


def base_asset(array: pa.Array) -> pa.Array:
    """``BASE-QUOTE`` -> ``BASE``."""
    return pc.list_element(pc.split_pattern(to_string(array), "-", max_splits=1), 0)


def quote_asset(array: pa.Array) -> pa.Array:
    """``BASE-QUOTE`` -> ``QUOTE``."""
    return pc.list_element(pc.split_pattern(to_string(array), "-", max_splits=1), 1)


BUILTIN_TRANSFORMS: dict[str, Transform] = {
    "from_ms": from_ms,
    "from_us": from_us,
    "from_s": from_s,
    "from_ns": from_ns,
    "iso8601": iso8601,
    "to_double": to_double,
    "to_string": to_string,
    "upper": upper,
    "map_values": map_values,
    "canonical_symbol": canonical_symbol,
    "base_asset": base_asset,
    "quote_asset": quote_asset,
    "taker_side_from_maker_flag": taker_side_from_maker_flag,
    "invert_side": invert_side,
}
