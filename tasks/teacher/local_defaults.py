"""Where the embedded teacher (`ossforge teacher serve`) listens by default."""

LOCAL_TEACHER_HOST = "127.0.0.1"
LOCAL_TEACHER_PORT = 8089
LOCAL_TEACHER_URL = f"http://{LOCAL_TEACHER_HOST}:{LOCAL_TEACHER_PORT}/v1"
LOCAL_TEACHER_MODEL = "smollm2-135m-instruct"
