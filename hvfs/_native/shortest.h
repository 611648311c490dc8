/* A float's repr, as Python writes it, without dtoa for the audit's times.
 *
 * Why: the shortest repr of a double (PyOS_double_to_string, 'r') runs David Gay's dtoa,
 * which was 44 % of the C writer's time per line (perf of audit.lines on stat records):
 * the event's time is the one float of every line. A time is a double in [1, 2**53)
 * with an exponent the compiler's 128-bit integers hold whole, so the shortest decimal
 * that reads back as it can be found exactly with integers: for k = 0, 1, ... fraction
 * digits, the nearest decimal with k digits (the one repr would pick among those of that
 * length), and whether it lies strictly within half a unit in the last place of the
 * double (then reading it back gives the double again; nothing shorter did, so it is
 * the shortest). Anything else (a power of two, whose gap below is half the gap above;
 * a decimal exactly half a unit away, or exactly between two k-digit ones, where
 * rounding to even decides; values outside the range) is left to dtoa: -1.
 */
#ifndef HVFS_SHORTEST_H
#define HVFS_SHORTEST_H

#include <math.h>
#include <stdint.h>

typedef unsigned __int128 hvfs_u128;

/* Python's repr(x) for x in [1, 2**53) into out (at least 32 bytes), its length; -1 to
 * leave it to dtoa. */
static int shortest_repr(double x, char *out) {
    if (!(x >= 1.0 && x < 9007199254740992.0))
        return -1;
    int exponent;
    uint64_t mantissa = (uint64_t)ldexp(frexp(x, &exponent), 53); /* x = mantissa / 2**shift, exactly */
    int shift = 53 - exponent;                                     /* 0 to 52 */
    if (mantissa == (uint64_t)1 << 52)
        return -1;
    uint64_t whole = 0, fraction = 0;
    int digits = -1;
    if (shift == 0) {
        whole = mantissa, digits = 0;
    } else {
        const hvfs_u128 one = (hvfs_u128)1 << shift, half = one >> 1;
        uint64_t power = 1; /* 10**k, at most 10**18: 64 bits, so that each product is one multiply */
        for (int k = 0; k <= 17; k++, power *= 10) {
            hvfs_u128 scaled = (hvfs_u128)mantissa * power; /* x * 10**k * 2**shift */
            hvfs_u128 rest = scaled & (one - 1);
            if (rest == half)
                return -1;
            hvfs_u128 nearest = (scaled >> shift) + (rest > half);
            hvfs_u128 off = rest > half ? one - rest : rest; /* |nearest * 2**shift - scaled| */
            if (2 * off == power)
                return -1;
            if (2 * off < power) {
                /* a time's nearest (some 10**16) fits 64 bits: no 128-bit division, which
                 * was 2.5 % of the audit writer's samples in perf */
                if (nearest >> 64 == 0)
                    whole = (uint64_t)nearest / power, fraction = (uint64_t)nearest % power;
                else
                    whole = (uint64_t)(nearest / power), fraction = (uint64_t)(nearest % power);
                digits = k;
                break;
            }
        }
        if (digits < 0)
            return -1;
    }
    char reversed[24];
    int n = 0, length = 0;
    do
        reversed[n++] = (char)('0' + whole % 10);
    while ((whole /= 10) != 0);
    while (n > 0)
        out[length++] = reversed[--n];
    out[length++] = '.';
    if (digits == 0) {
        out[length++] = '0';
        return length;
    }
    for (int i = digits - 1; i >= 0; i--, fraction /= 10)
        out[length + i] = (char)('0' + fraction % 10);
    return length + digits;
}

#endif
