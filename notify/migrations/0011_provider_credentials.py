import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0010_address_suppression'),
    ]

    operations = [
        migrations.CreateModel(
            name='ProviderCredential',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('provider', models.CharField(max_length=32)),
                ('sealed', models.TextField()),
                ('version', models.PositiveIntegerField(default=1)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('app', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='provider_credentials', to='notify.app')),
            ],
            options={
                'verbose_name': 'provider credentials',
                'verbose_name_plural': 'provider credentials',
                'constraints': [models.UniqueConstraint(fields=('app', 'provider'), name='provider_credential_unique')],
            },
        ),
    ]
