"""Decodes JSON the way Go's encoding/json Unmarshal does, into type
descriptions, so that a test can tell whether a Go program (istioctl) would
read a document or fail on it, without Go.

The rules kept (encoding/json, Go 1.22):
- an object into a struct: each key goes to the field whose json name equals
  it, else to the one equal ignoring case; keys naming no field are ignored;
- null into a pointer, slice, map or interface leaves nil; into any other
  type it does nothing (the zero value stays);
- a JSON value of the wrong kind for the Go type is an error (Go keeps
  going and returns the first such error; here the first one raises);
- numbers into integer types must be integer literals (no fraction, no
  exponent) within the type's range; floats take any number;
- map keys: string kinds as they are, integer kinds parsed in base 10 with
  range checks (an error otherwise);
- json.RawMessage keeps the value's text; `any` takes any value;
- a type with its own UnmarshalJSON is given as Custom(fn).

Types are plain values: STRING, BOOL, Int(bits, signed), FLOAT, ANY, RAW,
Ptr(t), Slice(t), Map(key, t), Struct(name, [(field, json_name, t)]),
Custom(name, fn)."""

import json
import re


class DecodeError(Exception):
    pass


class _Num(str):
    """A number's literal, as Go sees it (json.Number-like)."""


class _T:
    def __init__(self, kind, **kw):
        self.kind = kind
        self.__dict__.update(kw)

    def __repr__(self):
        return getattr(self, 'name', None) or self.kind


STRING = _T('string')
BOOL = _T('bool')
FLOAT = _T('float64')
ANY = _T('interface{}')
RAW = _T('raw', name='json.RawMessage')


def Int(bits, signed=True):
    return _T('int', bits=bits, signed=signed, name='%sint%d' % ('' if signed else 'u', bits))


def Ptr(t):
    return _T('ptr', elem=t, name='*%r' % (t,))


def Slice(t):
    return _T('slice', elem=t, name='[]%r' % (t,))


def Map(key, t):
    return _T('map', key=key, elem=t, name='map[%r]%r' % (key, t))


def Struct(name, fields):
    return _T('struct', name=name, fields=fields)


def Custom(name, fn):
    """fn(raw_value, path) -> decoded; raises DecodeError."""
    return _T('custom', name=name, fn=fn)


def _bad_constant(c):
    raise DecodeError('invalid character in %r (not JSON)' % c)


class _Obj(list):
    """A JSON object: its (key, value) pairs in order."""


def _kind(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'bool'
    if isinstance(v, _Num):
        return 'number'
    if isinstance(v, str):
        return 'string'
    return 'object' if isinstance(v, _Obj) else 'array'


def _mismatch(v, t, path):
    raise DecodeError('json: cannot unmarshal %s into Go value of type %r (at %s)' % (_kind(v), t, path or '.'))


def _parse_int(text, t, path):
    if not re.fullmatch(r'-?[0-9]+', text):
        raise DecodeError('json: cannot unmarshal number %s into Go value of type %r (at %s)' % (text, t, path))
    n = int(text)
    lo, hi = (-(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1) if t.signed else (0, (1 << t.bits) - 1)
    if not lo <= n <= hi:
        raise DecodeError('json: cannot unmarshal number %s into Go value of type %r (at %s)' % (text, t, path))
    return n


def _decode(v, t, path):
    if t.kind == 'custom':
        return t.fn(v, path)
    if t.kind == 'raw':
        return v
    if v is None:
        return None if t.kind in ('ptr', 'slice', 'map', 'interface{}') else _zero(t)
    if t.kind == 'ptr':
        return _decode(v, t.elem, path)
    if t.kind == 'interface{}':
        return _plain(v)
    k = _kind(v)
    if t.kind == 'string':
        if k != 'string':
            _mismatch(v, t, path)
        return str(v)
    if t.kind == 'bool':
        if k != 'bool':
            _mismatch(v, t, path)
        return v
    if t.kind == 'float64':
        if k != 'number':
            _mismatch(v, t, path)
        return float(v)
    if t.kind == 'int':
        if k != 'number':
            _mismatch(v, t, path)
        return _parse_int(str(v), t, path)
    if t.kind == 'slice':
        if k != 'array':
            _mismatch(v, t, path)
        return [_decode(e, t.elem, '%s[%d]' % (path, i)) for i, e in enumerate(v)]
    if t.kind == 'map':
        if k != 'object':
            _mismatch(v, t, path)
        out = {}
        for key, e in v:
            if t.key.kind == 'int':
                try:
                    mk = _parse_int(key, t.key, path)
                except (DecodeError, ValueError):
                    raise DecodeError('json: cannot unmarshal number %s into Go value of type %r (at %s)'
                                      % (key, t.key, path))
            elif t.key.kind == 'string':
                mk = key
            else:
                raise DecodeError('unsupported map key type %r' % t.key)
            out[mk] = _decode(e, t.elem, '%s[%r]' % (path, key))
        return out
    if t.kind == 'struct':
        if k != 'object':
            _mismatch(v, t, path)
        out = _zero(t)
        for key, e in v:
            f = next((f for f in t.fields if f[1] == key), None) or \
                next((f for f in t.fields if f[1].lower() == key.lower()), None)
            if f is None:
                continue
            got = _decode(e, f[2], '%s.%s' % (path, key))
            if e is not None or f[2].kind in ('ptr', 'slice', 'map', 'interface{}'):
                out[f[0]] = got
        return out
    raise DecodeError('unsupported type %r' % t)


def _zero(t):
    return {'string': '', 'bool': False, 'float64': 0.0, 'int': 0}.get(t.kind) if t.kind != 'struct' else \
        {f[0]: _zero(f[2]) if f[2].kind in ('string', 'bool', 'float64', 'int', 'struct') else None
         for f in t.fields}


def _plain(v):
    k = _kind(v)
    if k == 'object':
        return {key: _plain(e) for key, e in v}
    if k == 'array':
        return [_plain(e) for e in v]
    if k == 'number':
        return float(v)
    return v


def loads(text):
    """Parses JSON text keeping what Go's decoder needs (number literals,
    objects as pair lists)."""
    try:
        return json.loads(text, parse_int=_Num, parse_float=_Num, parse_constant=_bad_constant,
                          object_pairs_hook=_Obj)
    except ValueError as e:
        raise DecodeError('invalid JSON: %s' % e)


def decode(value, t, path=''):
    """Decodes an already parsed value (from loads) into type t."""
    return _decode(value, t, path)


def unmarshal(text, t):
    """json.Unmarshal(text, &v) for v of type t; returns v or raises DecodeError."""
    return _decode(loads(text), t, '')
