"""Tooling shared by the tests and the benchmark scripts (not part of the service).

- `server`: real Gunicorn from gunicorn.conf.py on a free loopback port, ready when the
  service says so (`/readyz`);
- `nginx`: the shipped nginx template in front of test servers;
- `images`: seeded pictures and the shared ImageNet photos;
- `triton_repo`: Triton model repositories from a seeded model (ONNX, pytorch_libtorch);
- `digits`: a really trained classifier, offline (scikit-learn's digits), exported with app.export;
- `hostile`: malformed and hostile requests with their documented answers;
- `loadgen`: closed- and open-loop load generators;
- `bench`: machine description, percentiles, photos;
- `options`: the benchmark scripts' command line, each shared flag declared once.
"""
