// Runs an exported segdet package (scripts/export.py) on one image and prints the detections as JSON.
//
//   segdet_predict LIBSEGDET_OPS.so MODEL.pt2 IMAGE.ppm [score_threshold=0.5]
//
// Loads segdet's op library (the package calls segdet::check_image, roi_align, nms, paste_masks through the
// dispatcher), then the package with AOTInductor's loader. The image is a binary PPM (P6, maxval 255): no image
// library is needed. Output: {"image", "height", "width", "class_names", "detections": [{"label", "class_name",
// "score", "box": [x1, y1, x2, y2] input pixels, "mask_area": foreground pixels}]}, best first.

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::string next_token(std::istream& in) {
  std::string tok;
  while (in >> tok) {
    if (tok[0] != '#') return tok;
    std::string rest;
    std::getline(in, rest);  // a comment runs to the end of the line
  }
  throw std::runtime_error("truncated PPM header");
}

// uint8 Tensor[3, H, W] RGB of a binary PPM file.
at::Tensor read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open image " + path);
  if (next_token(in) != "P6") throw std::runtime_error(path + ": not a binary PPM (P6) file");
  const int64_t w = std::stoll(next_token(in)), h = std::stoll(next_token(in));
  if (std::stoi(next_token(in)) != 255) throw std::runtime_error(path + ": only maxval 255 PPMs are supported");
  in.get();  // the single whitespace byte before the pixels
  at::Tensor hwc = at::empty({h, w, 3}, at::kByte);
  in.read(reinterpret_cast<char*>(hwc.data_ptr<uint8_t>()), h * w * 3);
  if (in.gcount() != h * w * 3) throw std::runtime_error(path + ": truncated pixel data");
  return hwc.permute({2, 0, 1}).contiguous();
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The package stores class_names as a JSON list of strings; split it without a JSON library.
std::vector<std::string> parse_names(const std::string& json) {
  std::vector<std::string> names;
  std::string cur;
  bool in_str = false, esc = false;
  for (char c : json) {
    if (!in_str) {
      if (c == '"') in_str = true, cur.clear();
    } else if (esc) {
      cur += c, esc = false;
    } else if (c == '\\') {
      esc = true;
    } else if (c == '"') {
      names.push_back(cur), in_str = false;
    } else {
      cur += c;
    }
  }
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::cerr << "usage: " << argv[0] << " LIBSEGDET_OPS.so MODEL.pt2 IMAGE.ppm [score_threshold=0.5]\n";
    return 2;
  }
  try {
    if (dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      throw std::runtime_error(std::string("cannot load segdet's op library: ") + dlerror());
    }
    const double threshold = argc == 5 ? std::stod(argv[4]) : 0.5;
    torch::inductor::AOTIModelPackageLoader loader(argv[2]);
    auto meta = loader.get_metadata();
    const auto names = parse_names(meta.count("segdet.class_names") ? meta["segdet.class_names"] : "[]");
    at::Tensor image = read_ppm(argv[3]);
    std::vector<at::Tensor> out = loader.run({image});
    if (out.size() != 4) throw std::runtime_error("the package returned " + std::to_string(out.size()) + " outputs, not 4");
    at::Tensor boxes = out[0].cpu().to(at::kDouble), scores = out[1].cpu().to(at::kDouble);
    at::Tensor labels = out[2].cpu(), areas = out[3].cpu().flatten(1).sum(1);
    std::ostringstream js;
    js.precision(9);
    js << "{\"image\": " << json_string(argv[3]) << ", \"height\": " << image.size(1) << ", \"width\": "
       << image.size(2) << ", \"detections\": [";
    bool first = true;
    for (int64_t i = 0; i < boxes.size(0); ++i) {
      const double score = scores[i].item<double>();
      if (score < threshold) continue;
      const int64_t label = labels[i].item<int64_t>();
      js << (first ? "" : ", ") << "{\"label\": " << label << ", \"class_name\": "
         << json_string(label >= 1 && label <= static_cast<int64_t>(names.size()) ? names[label - 1] : "")
         << ", \"score\": " << score << ", \"box\": [" << boxes[i][0].item<double>() << ", "
         << boxes[i][1].item<double>() << ", " << boxes[i][2].item<double>() << ", " << boxes[i][3].item<double>()
         << "], \"mask_area\": " << areas[i].item<int64_t>() << "}";
      first = false;
    }
    js << "]}";
    std::cout << js.str() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "segdet_predict: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
