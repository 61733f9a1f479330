// decode.cpp: the dichotomy decoder from C++ through unigs.h, with RAII over the C buffers.
//   decode COLORMAP.ppm   -> prints the number of entities and each one's pixel count
// Build: g++ -std=c++17 decode.cpp $(pkg-config --cflags --libs unigs) -o decode
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "unigs.h"

struct Image {
    int width = 0, height = 0;
    std::vector<std::uint8_t> rgb;
};

static Image read_ppm(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::string magic;
    int maxval = 0;
    Image img;
    if (!(f >> magic >> img.width >> img.height >> maxval) || magic != "P6" || maxval != 255)
        throw std::runtime_error(path + " is not an 8-bit binary PPM");
    f.get();
    img.rgb.resize(static_cast<size_t>(img.width) * img.height * 3);
    if (!f.read(reinterpret_cast<char *>(img.rgb.data()), img.rgb.size())) throw std::runtime_error(path + " is truncated");
    return img;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " COLORMAP.ppm\n";
        return 2;
    }
    try {
        Image img = read_ppm(argv[1]);
        std::vector<std::int32_t> labels(unigs_required_size(UNIGS_LABELS, img.width, img.height) / sizeof(std::int32_t));
        int n = 0;
        int status = unigs_decode_colormap(img.rgb.data(), img.width, img.height, 3 * img.width, nullptr, labels.data(),
                                           labels.size() * sizeof(std::int32_t), &n);
        if (status != UNIGS_OK) throw std::runtime_error(unigs_last_error(nullptr));
        std::map<int, long> area;
        for (auto l : labels) area[l]++;
        std::cout << n << " entities";
        for (auto [label, pixels] : area)
            if (label) std::cout << " " << label << ":" << pixels;
        std::cout << "\n";
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
