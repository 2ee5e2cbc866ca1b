bool const pwhole = (v415 >= v447) && (v415 + 64u <= v449);
if (pwhole) {
uint32_t const pr0 = v443 / 8u;
uint32_t const pc = v443 % 8u;
uint32_t const pp0 = v263 + (v415 + pr0) * v208 - *v9077;
uint32_t const psa = dynamic_meta_v8823[v8858 + v211] / 8u;
uint32_t const psb = dynamic_meta_v8823[v8862 + v211] / 8u;
uint32_t const pa0 = v501 / 8u + pp0 * psa + pc;
uint32_t const pb0 = v511 / 8u + pp0 * psb + pc;
uint32_t const pstep = v208 * 4u;
uint32_t const pda = pstep * psa;
uint32_t const pdb = pstep * psb;
uint32_t const peven = v485 + pr0 * 8u + (pc ^ pr0);
uint32_t const podd = v485 + pr0 * 8u + 32u + (pc ^ (pr0 + 4u));
#pragma unroll
for (uint32_t j = 0; j < 16u; ++j) {
uint32_t const to = ((j % 2u == 0u) ? peven : podd) + (j / 2u) * 64u;
uint32_t const aj = pa0 + pda * j;
uint32_t const bj = pb0 + pdb * j;
uint32_t const sa = __cvta_generic_to_shared(&(*v8961)[to]);
asm volatile("cp.async.cg.shared::cta.global [%0], [%1], 16, 16;" :  : "r"(sa), "l"(&v7[aj]) : "memory");
uint32_t const sb = __cvta_generic_to_shared(&(*v8961)[to + 512u]);
asm volatile("cp.async.cg.shared::cta.global [%0], [%1], 16, 16;" :  : "r"(sb), "l"(&v13[bj]) : "memory");
}
} else {
