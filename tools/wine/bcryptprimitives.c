/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Go >= 1.24
 * Windows binaries under Wine releases that lack it (Debian 12's Wine 8.0):
 * the Go runtime refuses to start without ProcessPrng. This one draws from
 * advapi32's RtlGenRandom (SystemFunction036), which Wine has.
 * For tests only: tools/wine/smoke.sh builds it with mingw-w64.
 */
#include <windows.h>

typedef BOOLEAN (WINAPI *rtl_gen_random_fn)(PVOID, ULONG);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    static rtl_gen_random_fn gen;
    if (!gen) {
        HMODULE h = LoadLibraryA("advapi32.dll");
        if (h)
            gen = (rtl_gen_random_fn)GetProcAddress(h, "SystemFunction036");
    }
    /* Like the real one, never fail: without randomness, stop. */
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!gen || !gen(data, n))
            ExitProcess(0xC000000D);
        data += n;
        len -= n;
    }
    return TRUE;
}
