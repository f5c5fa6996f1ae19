# The outbox index is built CONCURRENTLY: notify_delivery takes every API insert and worker
# update, and a plain CREATE INDEX would block them for the whole build.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('notify', '0001_initial'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='delivery',
            index=models.Index(condition=models.Q(('published_at__isnull', True), ('status', 'queued')), fields=['created_at'], name='delivery_outbox'),
        ),
    ]
