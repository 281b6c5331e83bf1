/* Shared between crypto/aead.c and the AEAD backends; not for other modules. */
#ifndef ZR_CRYPTO_AEAD_INT_H
#define ZR_CRYPTO_AEAD_INT_H

#include "crypto/aead.h"

/* The backend descriptors (crypto/aead_<name>.c); which exist depends on the
 * build (ZR_HAVE_IPSECMB, ZR_HAVE_DPDK). */
extern const zr_aead_backend_t zr_aead_openssl;
#ifdef ZR_HAVE_IPSECMB
extern const zr_aead_backend_t zr_aead_ipsecmb;
#endif
#ifdef ZR_HAVE_DPDK
extern const zr_aead_backend_t zr_aead_dpdk;
#endif

#endif
