# Channels come from the adapter registry (channels.registry), not from model choices; a delivery
# records which provider sent it; unused columns go. Each step is a catalogue change on
# PostgreSQL 11+ (widening a varchar, a column with a constant default, dropping a column): no
# table rewrite, no long lock.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0002_delivery_outbox'),
    ]

    operations = [
        migrations.RemoveField(model_name='app', name='provider_overrides'),
        migrations.RemoveField(model_name='delivery', name='last_error'),
        migrations.AddField(
            model_name='delivery', name='provider',
            field=models.CharField(blank=True, default='', max_length=32),
            preserve_default=False,
        ),
        migrations.AlterField(model_name='delivery', name='channel', field=models.CharField(max_length=16)),
        migrations.AlterField(model_name='device', name='platform', field=models.CharField(max_length=16)),
        migrations.AlterField(model_name='preference', name='channel', field=models.CharField(max_length=16)),
    ]
