FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=settings.production
COPY requirements.txt .
COPY sandbox/requirements.txt sandbox/
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
