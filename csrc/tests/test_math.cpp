// Host-side tests of the SEGDET_HOST_DEVICE math headers: the same functions the CUDA kernels
// call, compiled here as plain inline C++ (no torch, no GPU). Run through ctest.
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>

#include "ops/box_coder_math.h"
#include "ops/nms_math.h"
#include "ops/paste_masks_aligned_math.h"
#include "ops/roi_align_math.h"

namespace {

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const char* what, int line) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::fprintf(stderr, "FAILED (line %d): %s\n", line, what);
  }
}

bool near(double a, double b, double tol = 1e-6) {
  return std::fabs(a - b) <= tol;
}

#define CHECK(cond) check((cond), #cond, __LINE__)

void test_box_coder() {
  using namespace segdet::box_coder;
  const auto ref = make_ref_box(10.0f, 20.0f, 30.0f, 60.0f);
  CHECK(ref.width == 20.0f && ref.height == 40.0f);
  CHECK(ref.ctr_x == 20.0f && ref.ctr_y == 40.0f);

  DecodeParams<float> p{1.0f, 1.0f, 1.0f, 1.0f, std::log(1000.0f / 16.0f), false, 0.0f, 0.0f};
  float out[4];
  apply_delta(0.0f, 0.0f, 0.0f, 0.0f, ref, p, out);  // zero deltas give the reference box back
  CHECK(out[0] == 10.0f && out[1] == 20.0f && out[2] == 30.0f && out[3] == 60.0f);

  apply_delta(0.5f, -0.25f, std::log(2.0f), 0.0f, ref, p, out);  // shift by half a width, double width
  // centre x 20 + 0.5 * 20 = 30, width 40; centre y 40 - 0.25 * 40 = 30, height 40.
  CHECK(near(out[0], 10.0) && near(out[2], 50.0));
  CHECK(near(out[1], 10.0) && near(out[3], 50.0));

  DecodeParams<float> pw{10.0f, 10.0f, 5.0f, 5.0f, std::log(1000.0f / 16.0f), false, 0.0f, 0.0f};
  apply_delta(5.0f, 0.0f, 0.0f, 0.0f, ref, pw, out);  // dx / wx = 0.5
  CHECK(near(out[0], 20.0) && near(out[2], 40.0));

  // A huge dw is clamped to max_log_scale before exp: width scales by exactly 1000/16.
  apply_delta(0.0f, 0.0f, 1e6f, 0.0f, ref, p, out);
  CHECK(std::isfinite(out[0]) && std::isfinite(out[2]));
  CHECK(near(out[2] - out[0], 20.0 * 1000.0 / 16.0, 1e-2));

  DecodeParams<float> pc{1.0f, 1.0f, 1.0f, 1.0f, std::log(1000.0f / 16.0f), true, 25.0f, 50.0f};
  apply_delta(0.0f, 0.0f, std::log(4.0f), std::log(4.0f), ref, pc, out);
  CHECK(out[0] == 0.0f && out[1] == 0.0f && out[2] == 25.0f && out[3] == 50.0f);

  // NaN deltas propagate (as through torch.clamp) rather than snapping to a bound.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  apply_delta(nan, 0.0f, 0.0f, nan, ref, pc, out);
  CHECK(std::isnan(out[0]) && std::isnan(out[2]) && std::isnan(out[1]));

  double outd[4];
  const auto refd = make_ref_box(0.0, 0.0, 1.0, 1.0);
  DecodeParams<double> pd{1.0, 1.0, 1.0, 1.0, std::log(1000.0 / 16.0), false, 0.0, 0.0};
  apply_delta(0.0, 0.0, std::log(3.0), 0.0, refd, pd, outd);
  CHECK(near(outd[2] - outd[0], 3.0, 1e-12));
}

void test_nms_math() {
  using namespace segdet::nms_math;
  const float a = box_area(0.0f, 0.0f, 10.0f, 10.0f);
  CHECK(a == 100.0f);
  CHECK(box_iou(0.0f, 0.0f, 10.0f, 10.0f, a, 0.0f, 0.0f, 10.0f, 10.0f, a) == 1.0f);
  CHECK(box_iou(0.0f, 0.0f, 10.0f, 10.0f, a, 20.0f, 20.0f, 30.0f, 30.0f, a) == 0.0f);
  // Half overlap: inter 50, union 150.
  const float b = box_area(5.0f, 0.0f, 15.0f, 10.0f);
  CHECK(near(box_iou(0.0f, 0.0f, 10.0f, 10.0f, a, 5.0f, 0.0f, 15.0f, 10.0f, b), 1.0 / 3.0));
  // Touching edges overlap with zero area.
  CHECK(box_iou(0.0f, 0.0f, 10.0f, 10.0f, a, 10.0f, 0.0f, 20.0f, 10.0f, a) == 0.0f);
  // Zero-area boxes: 0 / 0 is NaN, which never exceeds a threshold (as in torchvision).
  const float z = box_area(1.0f, 1.0f, 1.0f, 1.0f);
  CHECK(!(box_iou(1.0f, 1.0f, 1.0f, 1.0f, z, 1.0f, 1.0f, 1.0f, 1.0f, z) > 0.5f));

  // threshold_in<float>(t) is the largest float not above t, so `iou > f` equals `(double)iou > t`.
  for (double t : {0.1, 0.3, 0.5, 0.7, 1.0 / 3.0, 0.0, 1.0}) {
    const float f = threshold_in<float>(t);
    CHECK(static_cast<double>(f) <= t);
    CHECK(static_cast<double>(std::nextafter(f, 2.0f)) > t);
  }
  CHECK(threshold_in<double>(0.7) == 0.7);
  CHECK(std::isnan(threshold_in<float>(std::nan(""))));
}

void test_roi_align_math() {
  using namespace segdet::roi_align_math;
  Axis<float> ax;
  // Box [0, 8) on a 2-bin axis, aligned: start -0.5, bin 4 pixels, adaptive grid ceil(8/2) = 4.
  CHECK(make_axis(0.0f, 8.0f, 1.0f, 2, -1, true, ax));
  CHECK(ax.start == -0.5f && ax.bin_size == 4.0f && ax.grid == 4);
  CHECK(sample_coord(ax, 0, 0) == -0.5f + 0.5f);
  CHECK(sample_coord(ax, 1, 3) == -0.5f + 4.0f + 3.5f);

  // Legacy (aligned=False) forces sub-pixel boxes to one pixel; fixed sampling ratio wins.
  CHECK(make_axis(2.0f, 2.25f, 1.0f, 7, 2, false, ax));
  CHECK(near(ax.bin_size, 1.0 / 7.0) && ax.grid == 2);

  // spatial_scale applies before the offset.
  CHECK(make_axis(16.0f, 48.0f, 0.25f, 4, 0, true, ax));
  CHECK(ax.start == 3.5f && ax.bin_size == 2.0f && ax.grid == 2);

  // Non-finite RoIs have no samples.
  CHECK(!make_axis(std::numeric_limits<float>::quiet_NaN(), 4.0f, 1.0f, 2, -1, true, ax) && ax.grid == 0);
  CHECK(!make_axis(0.0f, std::numeric_limits<float>::infinity(), 1.0f, 2, -1, false, ax) && ax.grid == 0);
  // A huge finite box clamps its adaptive grid instead of overflowing.
  CHECK(make_axis(0.0f, 1e30f, 1.0f, 1, -1, true, ax) && ax.grid == kMaxGrid);
  int64_t first = 0, last = 0;
  sample_range(ax, 0, 100, first, last);
  // Only samples near the 100-pixel map are visited: the range is widened by ~1e-6 * grid
  // for rounding, about a thousand samples here, instead of the grid's 2^30.
  CHECK(first <= last && last - first < 4096);

  Tap<float> tap;
  CHECK(make_tap(1.25f, 10, tap) && tap.lo == 1 && tap.hi == 2 && tap.w_lo == 0.75f && tap.w_hi == 0.25f);
  CHECK(make_tap(-0.5f, 10, tap) && tap.lo == 0 && tap.hi == 1 && tap.w_lo == 1.0f && tap.w_hi == 0.0f);
  CHECK(make_tap(9.5f, 10, tap) && tap.lo == 9 && tap.hi == 9 && tap.w_lo == 1.0f);
  CHECK(!make_tap(-1.5f, 10, tap));
  CHECK(!make_tap(10.5f, 10, tap));
  CHECK(!make_tap(std::numeric_limits<float>::quiet_NaN(), 10, tap));
  // An empty axis has no pixel to read: even samples in [-1, 0] are rejected (they used to give
  // lo = hi = -1 and read before the map).
  CHECK(!make_tap(-0.5f, 0, tap));
  CHECK(!make_tap(0.0f, 0, tap));
  CHECK(!make_tap(-1.0f, 0, tap));

  // sample_range_in / bin_range_in never drop a sample or bin that reaches the window: compare
  // with a brute-force scan over every sample of a few axes (the gathering backward relies on it).
  bool ranges_ok = true;
  for (float lo_edge : {-7.3f, 0.0f, 3.25f, 41.0f}) {
    for (float len : {0.0f, 0.4f, 5.0f, 60.0f}) {
      for (int64_t sr : {0, 2, 5}) {
        Axis<float> a;
        make_axis(lo_edge, lo_edge + len, 0.5f, 7, sr, true, a);
        for (int q = -2; q < 40; ++q) {
          int64_t p0, p1;
          bin_range_in(a, 7, q - 1.0, q + 1.0, p0, p1);
          for (int64_t p = 0; p < 7; ++p) {
            int64_t f, l;
            sample_range_in(a, p, q - 1.0, q + 1.0, f, l);
            for (int64_t i = 0; i < a.grid; ++i) {
              const float v = sample_coord(a, p, i);
              if (v >= q - 1.0f && v <= q + 1.0f) {
                ranges_ok &= p >= p0 && p <= p1 && i >= f && i <= l;
              }
            }
          }
        }
      }
    }
  }
  CHECK(ranges_ok);
  // And they do bound: on a 1000-sample bin, a 2-pixel window keeps a handful of samples.
  CHECK(make_axis(0.0f, 1000.0f, 1.0f, 1, 0, false, ax) && ax.grid == 1000);
  sample_range_in(ax, 0, 499.0, 501.0, first, last);
  CHECK(first <= 499 && last >= 500 && last - first < 16);
  CHECK(make_axis(0.0f, 70.0f, 1.0f, 7, 0, false, ax));
  int64_t p0 = 0, p1 = 0;
  bin_range_in(ax, 7, 34.0, 36.0, p0, p1);
  CHECK(p0 <= 3 && p1 >= 3 && p1 - p0 <= 4);
}

void test_aligned_paste_math() {
  namespace apm = segdet::ops::aligned_paste_math;
  // A box of 28 px with a 28-cell mask: pixel p's centre reads cell p - lo exactly, weights (1, 0).
  const auto a = apm::make_axis<float>(10.0f, 38.0f, 28);
  CHECK(a.valid && a.scale == 1.0f);
  auto t = apm::make_tap(a, 10, 28);
  CHECK(t.hit && t.i0 == 1 && t.w0 == 1.0f && t.w1 == 0.0f);  // padded index 1 = mask cell 0
  t = apm::make_tap(a, 37, 28);
  CHECK(t.hit && t.i0 == 28 && t.w0 == 1.0f);  // the last cell
  // Half a cell outside either edge still reads the mask (blended with the zero padding); a whole cell does not.
  const auto h = apm::make_axis<float>(10.0f, 24.0f, 28);  // 2 cells a pixel
  t = apm::make_tap(h, 9, 28);  // u = (9.5 - 10) * 2 - 0.5 = -1.5: outside (-1, 28)
  CHECK(!t.hit);
  const auto q = apm::make_axis<float>(10.0f, 66.0f, 28);  // half a cell a pixel
  t = apm::make_tap(q, 9, 28);  // u = (9.5 - 10) / 2 - 0.5 = -0.75: cells -1 (padding) and 0
  CHECK(t.hit && t.i0 == 0 && near(t.w0, 0.75) && near(t.w1, 0.25));
  // Invalid extents: zero, negative, NaN, infinite.
  CHECK(!apm::make_axis<float>(5.0f, 5.0f, 28).valid && !apm::make_axis<float>(6.0f, 5.0f, 28).valid);
  CHECK(!apm::make_axis<float>(std::nanf(""), 5.0f, 28).valid);
  CHECK(!apm::make_axis<double>(0.0, std::numeric_limits<double>::infinity(), 28).valid);
  CHECK(!apm::make_tap(apm::make_axis<float>(6.0f, 5.0f, 28), 5, 28).hit);
  // sample() blends rows then columns: a padded 3 x 3 grid (S = 1) with the one cell set to 1.
  const float padded[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0};
  const apm::Tap<float> ty{1, 0.5f, 0.5f, true}, tx{0, 0.25f, 0.75f, true};
  CHECK(near(apm::sample(padded, 3, ty, tx), 0.5 * 0.75));
  // Regions: the box grown by one cell per side, floor/ceil, clipped; empty when the box is invalid or outside.
  auto r = apm::make_region(10.0, 20.0, 38.0, 34.0, 28, 100, 100);  // cells 1 x 0.5 px
  CHECK(r.x == 9 && r.y == 19 && r.w == 39 - 9 && r.h == 35 - 19);
  r = apm::make_region(-5.0, -5.0, 200.0, 3.0, 28, 50, 60);
  CHECK(r.x == 0 && r.y == 0 && r.w == 60 && r.h == 4);
  r = apm::make_region(70.0, 5.0, 90.0, 9.0, 28, 50, 60);
  CHECK(r.x == 0 && r.y == 0 && r.w == 0 && r.h == 0);
  r = apm::make_region(1.0, 1.0, std::nan(""), 9.0, 28, 50, 60);
  CHECK(r.w == 0 && r.h == 0);
  // Every pixel a tap hits lies in the region (the region's margin argument), on a sweep of boxes.
  bool inside = true;
  for (double lo = -3.3; lo < 20.0; lo += 1.7) {
    for (double extent = 0.4; extent < 90.0; extent *= 1.9) {
      const double box[4] = {lo, lo * 0.5, lo + extent, lo * 0.5 + extent * 0.7};
      const auto job = apm::make_job<float>(box, 28, 120, 130);
      for (int64_t x = 0; x < 130; ++x) {
        inside &= !apm::make_tap(job.ax, x, 28).hit || (x >= job.region.x && x < job.region.x + job.region.w);
      }
      for (int64_t y = 0; y < 120; ++y) {
        inside &= !apm::make_tap(job.ay, y, 28).hit || (y >= job.region.y && y < job.region.y + job.region.h);
      }
    }
  }
  CHECK(inside);
}

}  // namespace

int main() {
  test_box_coder();
  test_nms_math();
  test_roi_align_math();
  test_aligned_paste_math();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
