"""The calculator tool: exact arithmetic on one expression, parsed with `ast`, never evaluated by Python.

  calc = Calculator()                 # or Calculator(max_digits=1000, max_chars=1000)
  calc("2 ** 100 + 1")                # '1267650600228229401496703205377'
  calc("0.1 + 0.2")                   # '0.3'       (decimals are exact fractions)
  calc("(3 + 4) * 5 / 2")             # '17.5'
  calc("1 / 3")                       # '0.3333333333333333'  (16 significant digits)
  calc("2 ** 0.5")                    # '1.4142135623730951'  (a fractional power is a float)
  calc("x + 1")                       # 'Error: names are not allowed (x); use numbers only'

Grammar: numbers (integers of any size, decimals, 1e3 notation), + - * / // %
**, unary + and -, parentheses. Integers and decimals are kept as exact
fractions, so 0.1 + 0.2 is 0.3 and integers print without ".0"; a result that
is not a terminating decimal prints rounded to 16 significant digits. Only a
power with a non-integer exponent leaves exact arithmetic (a float).

Every failure is output text starting with "Error: ", never an exception:
anything but the grammar above (names, calls, attributes, comparisons, ...),
division by zero, and the denial-of-service guards: inputs over `max_chars`,
nesting deeper than `max_depth`, any intermediate number over `max_digits`
digits (checked *before* a power is computed, so 9**9**9 is refused at once).
"""
from __future__ import annotations

import ast
import decimal
import math
from fractions import Fraction
from typing import Union

Number = Union[Fraction, float]  # Fraction: exact; float: after a fractional power

_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**"}
# Characters a model may write for the usual operators.
_ALIASES = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-"})
_SIGNIFICANT = 16


class CalcError(Exception):
  """A refusal; its message becomes the tool's "Error: ..." output."""


class Calculator:
  name = "calculator"

  def __init__(self, max_chars: int = 1000, max_digits: int = 1000, max_depth: int = 100):
    self.max_chars = max_chars
    self.max_digits = max_digits
    self.max_depth = max_depth
    # Size checks use bit lengths: cheap, unlike converting a huge integer to decimal digits.
    self._max_bits = math.ceil(max_digits * math.log2(10))

  def __call__(self, arguments: str) -> str:
    try:
      return _format(self.evaluate(arguments))
    except CalcError as e:
      return f"Error: {e}"
    except Exception as e:  # a bug must still come back as text, never into the sampling loop
      return f"Error: calculator failed ({type(e).__name__}: {e})"

  def evaluate(self, arguments: str) -> Number:
    """The value of the expression; raises CalcError with a message for the model."""
    if not isinstance(arguments, str):
      raise CalcError(f"the expression must be text, got {type(arguments).__name__}")
    if len(arguments) > self.max_chars:
      raise CalcError(f"expression too long ({len(arguments)} characters, at most {self.max_chars})")
    text = arguments.translate(_ALIASES).strip().rstrip("=").strip()
    if not text:
      raise CalcError("empty expression; write one like 12 * (3 + 4)")
    try:
      tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
      raise CalcError(f"invalid expression ({e.msg})") from None
    except (RecursionError, MemoryError):
      raise CalcError(f"expression nested too deeply (at most {self.max_depth} levels)") from None
    return self._eval(tree.body, 0)

  def _eval(self, node: ast.AST, depth: int) -> Number:
    if depth > self.max_depth:
      raise CalcError(f"expression nested too deeply (at most {self.max_depth} levels)")
    if isinstance(node, ast.Constant):
      return self._constant(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      value = self._eval(node.operand, depth + 1)
      return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
      left = self._eval(node.left, depth + 1)
      right = self._eval(node.right, depth + 1)
      return self._check(self._binary(node.op, left, right))
    raise CalcError(_unsupported(node))

  def _constant(self, value) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise CalcError(f"only numbers are allowed, not {value!r}")
    if isinstance(value, float):
      if not math.isfinite(value):
        raise CalcError("number too large")
      # repr is the shortest text that reads back as this float, i.e. what was written: 0.1 → 1/10
      return self._check(Fraction(repr(value)))
    return self._check(Fraction(value))

  def _binary(self, op: ast.operator, a: Number, b: Number) -> Number:
    try:
      if isinstance(op, ast.Add):
        return a + b
      if isinstance(op, ast.Sub):
        return a - b
      if isinstance(op, ast.Mult):
        return a * b
      if isinstance(op, ast.Div):
        return a / b
      if isinstance(op, ast.FloorDiv):
        quotient = a // b  # an int for two fractions
        return Fraction(quotient) if isinstance(quotient, int) else quotient
      if isinstance(op, ast.Mod):
        return a % b
      return self._power(a, b)
    except ZeroDivisionError:
      raise CalcError("division by zero") from None
    except OverflowError:
      raise CalcError(f"number too large (over {self.max_digits} digits)") from None

  def _power(self, base: Number, exponent: Number) -> Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
      n = abs(exponent.numerator)
      if base in (0, 1, -1) or n <= 1:
        return base ** exponent.numerator
      # The result has about n times the base's bits: refuse before computing, not after.
      bits = max(base.numerator.bit_length(), base.denominator.bit_length())
      if (bits - 1) * n > self._max_bits:
        raise CalcError(f"number too large (over {self.max_digits} digits)")
      return base ** exponent.numerator
    result = float(base) ** float(exponent)
    if isinstance(result, complex):
      raise CalcError("a negative number to a fractional power is not a real number")
    return result

  def _check(self, value: Number) -> Number:
    if isinstance(value, float):
      if not math.isfinite(value):
        raise CalcError("number too large")
      return value
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > self._max_bits:
      raise CalcError(f"number too large (over {self.max_digits} digits)")
    return value


def _unsupported(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return f"names are not allowed ({node.id}); use numbers only"
  if isinstance(node, ast.Call):
    return "function calls are not allowed; use + - * / // % ** and parentheses"
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
    return "^ is not a power here; use ** (2 ** 10)"
  if isinstance(node, ast.Tuple):
    return "commas are not allowed; write 1000 rather than 1,000, and one expression"
  return f"{type(node).__name__} is not allowed; use numbers, + - * / // % ** and parentheses"


def _format(value: Number) -> str:
  """Integers without ".0"; terminating decimals exactly; others to 16 significant digits."""
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)
  if value.denominator == 1:
    return str(value.numerator)
  den = value.denominator
  twos, fives = _multiplicity(den, 2), _multiplicity(den, 5)
  if den == 2 ** twos * 5 ** fives:  # a terminating decimal: print every digit
    places = max(twos, fives)
    scaled = value.numerator * 10 ** places // den
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"
  with decimal.localcontext() as ctx:
    ctx.prec = _SIGNIFICANT
    return str(decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)).replace("E", "e")


def _multiplicity(n: int, p: int) -> int:
  k = 0
  while n % p == 0:
    n //= p
    k += 1
  return k
