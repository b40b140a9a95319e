# The project's Airflow image: the official Airflow 3 image with this project's pinned requirements.
# docker-compose.yaml builds it for every Airflow service; dags/, include/ and plugins/ are mounted.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/project/
RUN pip install --no-cache-dir -r /opt/project/requirements.txt -c /opt/project/constraints.txt

ENV PYTHONPATH=/opt/project
